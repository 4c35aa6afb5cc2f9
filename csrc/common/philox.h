// Philox4x32-10 counter-based random number generator (header-only, host and device).
//
// Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011.
// A bijection of a 128-bit counter under a 64-bit key: ten rounds of
//   (c0, c1, c2, c3) -> (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0))
// with the key bumped by the Weyl constants between rounds. Known-answer vectors from
// Random123's kat_vectors are checked in tests/test_philox.py.
//
// Because a draw is a pure function of (key, counter), every noise value in certify is
// addressable: the same on 1 or 16 threads, on CPU or GPU, and after a resume.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CERTIFY_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CERTIFY_HOST_DEVICE inline
#endif

namespace certify {

struct Philox4x32 {
  static constexpr uint32_t kMul0 = 0xD2511F53u;
  static constexpr uint32_t kMul1 = 0xCD9E8D57u;
  static constexpr uint32_t kWeyl0 = 0x9E3779B9u;
  static constexpr uint32_t kWeyl1 = 0xBB67AE85u;
  static constexpr int kRounds = 10;
};

// One Philox4x32-10 evaluation: `ctr` (4 words) is replaced by the 4 output words.
CERTIFY_HOST_DEVICE void philox4x32_10(uint32_t ctr[4], uint32_t k0, uint32_t k1) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < Philox4x32::kRounds; ++round) {
    if (round > 0) {
      k0 += Philox4x32::kWeyl0;
      k1 += Philox4x32::kWeyl1;
    }
    const uint64_t p0 = static_cast<uint64_t>(Philox4x32::kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(Philox4x32::kMul1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  ctr[0] = c0;
  ctr[1] = c1;
  ctr[2] = c2;
  ctr[3] = c3;
}

// The counter layout certify uses for noise: which draw a word belongs to.
//   word 0: block of 4 coordinates within one noisy copy (coordinate d uses block d / 4, lane d % 4)
//   word 1: sample index, low 32 bits
//   word 2: sample index bits 32..47 | stream << 16
//   word 3: input index
//   key:    the user's 64-bit seed
// Streams keep independent draws apart (class selection, estimation, prediction, ...).
struct NoiseCounter {
  uint32_t input_index;
  uint32_t stream;   // < 2^16
  uint64_t sample;   // < 2^48
};

constexpr uint64_t kMaxSampleIndex = (uint64_t{1} << 48);
constexpr uint32_t kMaxStream = (1u << 16);

CERTIFY_HOST_DEVICE void philox_noise_block(uint32_t out[4], uint64_t seed, const NoiseCounter& c,
                                            uint32_t block) {
  out[0] = block;
  out[1] = static_cast<uint32_t>(c.sample);
  out[2] = static_cast<uint32_t>(c.sample >> 32) | (c.stream << 16);
  out[3] = c.input_index;
  philox4x32_10(out, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

}  // namespace certify
