#include <algorithm>
#include <stdexcept>
#include <string>

#include "sampling/noise.h"

namespace certify {
namespace {

// Coordinates are produced in chunks of kChunkBlocks Philox blocks: the word generation
// and the transform are separate loops over small stack arrays, which the compiler
// vectorises (the Philox rounds lane-wise, the transform through vector log/sin/cos).
constexpr int kChunkBlocks = 64;
constexpr int kChunkCoords = 4 * kChunkBlocks;

// Philox4x32-10 for `num_blocks` consecutive blocks, lane-wise: the rounds are the outer
// loop and the blocks the inner one, so each round is a few vector multiplies
// (32x32 -> 64 bit) over all blocks of the chunk. Same function as philox4x32_10.
struct PhiloxLanes {
  alignas(64) uint32_t w0[kChunkBlocks];
  alignas(64) uint32_t w1[kChunkBlocks];
  alignas(64) uint32_t w2[kChunkBlocks];
  alignas(64) uint32_t w3[kChunkBlocks];
};

void philox_lanes(PhiloxLanes& out, uint64_t seed, const NoiseCounter& c, uint32_t first_block) {
  const uint32_t ctr1 = static_cast<uint32_t>(c.sample);
  const uint32_t ctr2 = static_cast<uint32_t>(c.sample >> 32) | (c.stream << 16);
  const uint32_t ctr3 = c.input_index;
  for (int b = 0; b < kChunkBlocks; ++b) {
    out.w0[b] = first_block + static_cast<uint32_t>(b);
    out.w1[b] = ctr1;
    out.w2[b] = ctr2;
    out.w3[b] = ctr3;
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < Philox4x32::kRounds; ++round) {
    if (round > 0) {
      k0 += Philox4x32::kWeyl0;
      k1 += Philox4x32::kWeyl1;
    }
#pragma omp simd
    for (int b = 0; b < kChunkBlocks; ++b) {
      const uint64_t p0 = static_cast<uint64_t>(Philox4x32::kMul0) * out.w0[b];
      const uint64_t p1 = static_cast<uint64_t>(Philox4x32::kMul1) * out.w2[b];
      const uint32_t c1 = out.w1[b], c3 = out.w3[b];
      out.w0[b] = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      out.w1[b] = static_cast<uint32_t>(p1);
      out.w2[b] = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      out.w3[b] = static_cast<uint32_t>(p0);
    }
  }
}

// Coordinate 4b + k of the chunk takes word k of block b (the layout of philox_noise_block).
// One coordinate from one word: z[4b + k] = f(word k of block b).
template <typename T, typename F>
void per_word(const PhiloxLanes& w, T* z, F f) {
#pragma omp simd
  for (int b = 0; b < kChunkBlocks; ++b) {
    z[4 * b + 0] = f(w.w0[b]);
    z[4 * b + 1] = f(w.w1[b]);
    z[4 * b + 2] = f(w.w2[b]);
    z[4 * b + 3] = f(w.w3[b]);
  }
}

// The angle half of Box-Muller for one pair per block: z[4b + k], z[4b + k + 1] = r (cos, sin).
// One loop per pair: with the library's cos and sin, a loop holding both pairs was fused into a
// scalar sincos call, which has no vector variant.
template <typename T>
void rotate_pairs(const uint32_t* angle_words, const T* radius, T* z, int k) {
#pragma omp simd
  for (int b = 0; b < kChunkBlocks; ++b) {
    T c, s;
    cos_sin_turns(uniform_closed_open<T>(angle_words[b]), &c, &s);
    z[4 * b + k] = radius[b] * c;
    z[4 * b + k + 1] = radius[b] * s;
  }
}

template <typename T>
void lanes_to_noise(NoiseKind kind, const PhiloxLanes& w, T* z) {
  switch (kind) {
    case NoiseKind::kGaussian: {
      // Box-Muller pairs (w0, w1) -> z[4b], z[4b+1] and (w2, w3) -> z[4b+2], z[4b+3],
      // the same expressions as box_muller() in contiguous loops (so they vectorise).
      alignas(64) T r0[kChunkBlocks], r2[kChunkBlocks];
#pragma omp simd
      for (int b = 0; b < kChunkBlocks; ++b) {
        r0[b] = std::sqrt(static_cast<T>(-2) * std::log(uniform_open_closed<T>(w.w0[b])));
        r2[b] = std::sqrt(static_cast<T>(-2) * std::log(uniform_open_closed<T>(w.w2[b])));
      }
      rotate_pairs<T>(w.w1, r0, z, 0);
      rotate_pairs<T>(w.w3, r2, z, 2);
      break;
    }
    case NoiseKind::kLaplace:
      per_word(w, z, [](uint32_t word) { return standard_laplace<T>(word); });
      break;
    case NoiseKind::kUniform:
      per_word(w, z, [](uint32_t word) { return standard_uniform<T>(word); });
      break;
  }
}

template <typename T>
void fill_noisy_row(const T* x, int64_t dim, T* out, NoiseKind kind, T scale, uint64_t seed,
                    const NoiseCounter& c) {
  PhiloxLanes words;
  alignas(64) T z[kChunkCoords];
  const int64_t num_blocks = (dim + 3) / 4;
  for (int64_t b0 = 0; b0 < num_blocks; b0 += kChunkBlocks) {
    const int nb = static_cast<int>(std::min<int64_t>(kChunkBlocks, num_blocks - b0));
    // A partial last chunk computes all kChunkBlocks blocks and uses the first nb:
    // the value of a coordinate never depends on where the row ends.
    philox_lanes(words, seed, c, static_cast<uint32_t>(b0));
    lanes_to_noise<T>(kind, words, z);
    const int64_t d0 = 4 * b0;
    const int nd = static_cast<int>(std::min<int64_t>(4 * nb, dim - d0));
    const T* xs = x + d0;
    T* os = out + d0;
#pragma omp simd
    for (int j = 0; j < nd; ++j) os[j] = xs[j] + scale * z[j];
  }
}

}  // namespace

template <typename T>
void fill_noisy_cpu(const T* x, int64_t dim, T* out, int64_t rows, NoiseKind kind, T scale,
                    uint64_t seed, uint32_t input_index, uint32_t stream, uint64_t start) {
  if (rows < 0 || dim < 0) throw std::invalid_argument("rows and dim must be non-negative");
  if (start > kMaxSampleIndex || static_cast<uint64_t>(rows) > kMaxSampleIndex - start)
    throw std::invalid_argument("sample index start + rows = " + std::to_string(start + rows) +
                                " exceeds 2^48, the sample counter's range");
  if (stream >= kMaxStream) throw std::invalid_argument("stream must be < 2^16");
  if ((dim + 3) / 4 > int64_t{1} << 32)
    throw std::invalid_argument("input dimension exceeds 2^34, the block counter's range");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const NoiseCounter c{input_index, stream, start + static_cast<uint64_t>(i)};
    fill_noisy_row<T>(x, dim, out + i * dim, kind, scale, seed, c);
  }
}

template void fill_noisy_cpu<float>(const float*, int64_t, float*, int64_t, NoiseKind, float,
                                    uint64_t, uint32_t, uint32_t, uint64_t);
template void fill_noisy_cpu<double>(const double*, int64_t, double*, int64_t, NoiseKind, double,
                                     uint64_t, uint32_t, uint32_t, uint64_t);

}  // namespace certify
