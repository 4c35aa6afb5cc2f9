// CROWN back-substitution in the bound engine (Zhang et al. 2018): rows of coefficients carried
// from a node back to the input (or a node with a box) through every layer's linear bound, with
// the rounding terms that make the result hold in exact arithmetic (certify/bounds/reference.py).
#pragma once

#include <cstdint>
#include <vector>

#include "bounds/ibp.h"
#include "bounds/network.h"

namespace certify {
namespace bounds {

struct InputSet {
  Norm norm;
  const float* centre;
  const float* eps;
  const Box* box;
};

// Coefficient rows on one node. Dense: (rows, size). Windowed, on a node with a (C, H, W) map:
// row r holds every channel on the window of the map whose top-left corner is (top[r], left[r])
// and whose extent is h x w, laid out (C, h, w). This is the structured form of a convolution's
// coefficients (auto_LiRPA's "patches"): a neuron of a convolutional layer depends on its
// receptive field only, so its row costs the field's size instead of the map's at every layer
// down to the input. A window may hang over the map's edges; entries off the map are zero and
// stay zero (they would multiply a convolution's zero padding, which is no value of the network).
// All rows of one Rows share h and w. The arithmetic on the entries that are kept is the dense
// path's, so the rounding terms are the same (they bound sums of any length and order).
struct Rows {
  std::vector<float> v;
  bool windowed = false;
  int64_t h = 0, w = 0;
  std::vector<int32_t> top, left;  // windowed only, one per row
};

// The cost rule: rows go windowed where a window of h x w covers at most half of the H x W map
// (the work per row at least halves, which pays for the index arithmetic); dense otherwise.
// RowForm::kWindowed forces windows up to 4x the map's area, hanging over its edges (tests use it
// to reach every edge case; the cap keeps windows that grow through deep stacks from exploding).
bool use_window(RowForm form, int64_t h, int64_t w, int64_t H, int64_t W);

// What the chunks of rows of one back-substitution share, computed once from the boxes: per node
// the bound magnitudes max(|l|, |u|), the ReLU relaxations and the rounding terms' weights.
class BackwardCache {
 public:
  BackwardCache(const Network& net, const std::vector<Box>& boxes, bool sound)
      : net_(net), boxes_(boxes), sound_(sound), magnitude_(net.layers.size()), relu_(net.layers.size()),
        lines_(net.layers.size()), weighted_(net.layers.size()) {}

  const std::vector<float>& magnitude(int node);

  // Lower slope alpha, upper slope beta and upper intercept of each neuron of ReLU `index`.
  struct Relu {
    std::vector<float> alpha, beta, icpt;
  };
  const Relu& relu(int index);

  // The relaxation lines of each neuron of smooth activation `index` (activations.h).
  struct Lines {
    std::vector<float> a_l, b_l, a_u, b_u;
  };
  const Lines& lines(int index);

  // |W| m / (1 - gamma_q) for the Linear or Conv2d layer `index` (m: its input's magnitudes), the
  // weights of the coefficient product's rounding term (see _affine_backward in reference.py).
  const std::vector<float>& weighted_magnitude(int index, int64_t batch);

  const Box& box(int node) const { return boxes_[node]; }

 private:
  const Network& net_;
  const std::vector<Box>& boxes_;
  bool sound_;
  std::vector<std::vector<float>> magnitude_;
  std::vector<Relu> relu_;
  std::vector<Lines> lines_;
  std::vector<std::vector<float>> weighted_;
};

// Rows of coefficients back-substituted at once: memory is bounded by the chunk, not by the
// number of rows. Windowed rows are small, so more of them go at once.
constexpr int64_t kRowChunk = 1024, kWindowedRowChunk = 4096;

// Lower bounds (float32, rounded down when sound) of `count` rows on node `start` (row r of input
// batch_of[r], plus initial_const[r] when given), back-substituted to node `stop` and concretised
// there: over the input set at node 0, over the node's box otherwise.
std::vector<float> back_substitute_rows(const Network& net, BackwardCache& cache, bool sound, RowForm form,
                                        int64_t batch, int start, Rows rows, int64_t count, const int32_t* batch_of,
                                        int stop, const InputSet& input,
                                        const std::vector<double>* initial_const = nullptr);

}  // namespace bounds
}  // namespace certify
