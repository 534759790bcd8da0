// Selective scan (Mamba's S6 recurrence) on the CPU: forward and backward kernels; also
// the depthwise causal conv1d + bias + SiLU that precedes it (section near the end), and a
// whole Vim/DyVM block at inference composed of ATen calls and these kernels (one call per layer).
//
//   Δ_t = softplus(delta_t + bias)  (or delta_t + bias)
//   h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t          state (N,) per (batch, channel)
//   y_t = C_t · h_t + D u_t,   out_t = y_t · silu(z_t)
//
// Layouts: u, delta, z, out and the (B, E, L) gradients: (B, E, L) with any strides (the
// mixer passes channel-last (B, L, E) memory viewed as (B, E, L)); A: (E, N) contiguous;
// B, C: (B, L, N) with unit stride over n (e.g. column slices of the x_proj output), so the
// state index n is the contiguous inner dimension. Each row is gathered into contiguous
// scratch in scan order and its results scattered back. `reverse` runs the recurrence from
// t = L-1 down to 0 (h_t depends on t+1), reading and writing in the original time order:
// the backward branch of a bidirectional mixer without flipped copies.
//
// Generic path (any N, float or double; double is for gradcheck): loops over n with
// `#pragma omp simd`; float exp/softplus/sigmoid are branch-free polynomial versions that
// vectorise inside those loops (no libm calls).
// Fast path (float, N = 16, AVX-512 or AVX2): the state of one (batch, channel) row is one 16-lane
// vector register; exp is vrndscale + degree-6 polynomial + vscalef (9 instructions, ~1.5
// ulp); the dot products C_t · h_t are not reduced per step but stored and reduced 16 steps
// at a time with a transpose-add tree (likewise the two per-step sums of the backward).
// On AVX2 CPUs without AVX-512 the same kernels run with the 16 lanes in two 8-lane
// registers (exp: exp2_f's clamps, rounding trick and polynomial; horizontal-add tree).
//
// Parallelism: the forward splits (batch, channel) rows over at::parallel_for. The backward
// splits channels into one contiguous chunk per thread; a chunk owns dA, dD and dbias of its
// channels and accumulates dB, dC into its own (B, L, N) partial buffer, summed at the end,
// so there are no races and the result does not depend on scheduling.
//
// On AVX-512 and AVX2, channel-last float rows of 16 states (the mixer's layout) take other kernels,
// forward_lanes16 and backward_lanes16, with 16 channels in the vector lanes instead of 16 states (their
// comments say why).
//
// The backward recomputes, per (batch, channel), the forward states and decays into small
// per-thread buffers ((L+1) x N each, they stay in cache), then runs the reverse recurrence
//   dh_t = dy_t C_t + exp(Δ_{t+1} A) ⊙ dh_{t+1}
// and accumulates all the gradients from dh_t, h_{t-1} and exp(Δ_t A).
//
// Must not be compiled with -ffast-math (exp2_f rounds with the 1.5*2^23 trick).

#include <algorithm>
#include <functional>
#include <limits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr (set_flush_denormal)
#endif
#if defined(__AVX512F__)
#define DYVM_HAVE_N16 1
#define DYVM_N16_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define DYVM_HAVE_N16 1  // 16 lanes as two AVX2 registers
#define DYVM_N16_AVX512 0
#else
#define DYVM_HAVE_N16 0
#endif
// Channel-last float rows of 16 states run forward_lanes16 / backward_lanes16 (AVX-512, and AVX2 with the
// 16 lanes as two registers); -DDYVM_LANES=0 builds without them (the rows kernels everywhere; for A/B runs and
// the tests that cover both).
#ifndef DYVM_LANES
#define DYVM_LANES 1
#endif
// Channel-last float convs with 4 taps and no mask run conv_forward_cl16 / conv_backward_cl16_chunk (16
// channels in registers over a whole sequence); -DDYVM_CONV16=0 builds without them (for A/B runs).
#ifndef DYVM_CONV16
#define DYVM_CONV16 1
#endif
#if !DYVM_HAVE_N16  // the lanes kernels need the 16-lane vector (AVX-512, or AVX2 as two halves)
#undef DYVM_LANES
#define DYVM_LANES 0
#endif

#ifndef DYVM_SCAN_STANDALONE  // (defined only to benchmark the kernels without torch)
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>  // at::AutoDispatchBelowADInplaceOrView
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/index_add.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#endif

namespace {

#define DYVM_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------
// Branch-free float math (inlined into `omp simd` loops, where it vectorises).
// ---------------------------------------------------------------------------------------

DYVM_INLINE int32_t as_int(float x) {
  int32_t i;
  std::memcpy(&i, &x, sizeof(i));
  return i;
}
DYVM_INLINE float as_float(int32_t i) {
  float x;
  std::memcpy(&x, &i, sizeof(x));
  return x;
}

// 2^t. t = n + f with n integer, |f| <= 1/2 (rounding by the 1.5*2^23 trick); 2^f by a
// near-minimax degree-6 polynomial (rel. error 2e-9, ~1.5 ulp after rounding), times 2^n
// through the exponent bits. The polynomial is 2*2^f and the scale 2^(n-1), so n = 128 does
// not overflow the exponent field. t <= -126 gives 0 (true value < 1.2e-38), t >= 128 gives
// inf, NaN gives NaN.
DYVM_INLINE float exp2_f(float t) {
  t = t < -126.0f ? -126.0f : t;
  t = t > 129.0f ? 129.0f : t;
  const float v = t + 12582912.0f;
  const float nf = v - 12582912.0f;
  const float f = t - nf;
  float p = 3.069162316e-04f;
  p = p * f + 2.679986243e-03f;
  p = p * f + 1.923697792e-02f;
  p = p * f + 1.110065755e-01f;
  p = p * f + 4.804529378e-01f;
  p = p * f + 1.386294411e+00f;
  p = p * f + 2.0f;
  // bits(v) = bits(1.5*2^23) + n = 0x4B400000 + n; exponent field of 2^(n-1) is n + 126
  return p * as_float((as_int(v) - (0x4B400000 - 126)) << 23);
}

DYVM_INLINE float exp_f(float x) { return exp2_f(x * 1.44269504088896341f); }

// log1p(e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) in [0, 1/3]; odd series to s^15
// (truncation < 2e-9 relative). Keeps full relative accuracy for tiny e. V: float, or the AVX-512 kernels' 16-lane
// float vector (the same operations lane by lane).
template <typename V>
DYVM_INLINE V log1p_unit(V e) {
  const V s = e / (e + 2.0f);
  const V s2 = s * s;
  V p = V{} + 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return (s + s) * p;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)); stable everywhere, and exactly x for x > 20
// in float (the log1p term is < 2.1e-9 there), like torch's thresholded softplus.
DYVM_INLINE float softplus_f(float x) {
  const float mx = x > 0.0f ? x : 0.0f;
  return mx + log1p_unit(exp_f(-std::fabs(x)));
}
DYVM_INLINE float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }
// softplus(x) and sigmoid(x) from one exp(-|x|) = e: sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below
// (the backward's pre-pass needs both; one exp instead of two)
DYVM_INLINE void softplus_sigmoid_f(float x, float& sp, float& sg) {
  const float e = exp_f(-std::fabs(x));
  sp = (x > 0.0f ? x : 0.0f) + log1p_unit(e);
  sg = (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

// Double versions (libm; double is used for gradcheck, not for speed).
DYVM_INLINE double exp_f(double x) { return std::exp(x); }
DYVM_INLINE double softplus_f(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
DYVM_INLINE double sigmoid_f(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---------------------------------------------------------------------------------------
// Shared per-row pieces.
//
// Every per-(batch, channel) row is first gathered, in scan order, into contiguous scratch
// arrays (u, raw delta, z; grad_out in the backward), and its results are scattered back
// through the output's strides; so u, delta, z, grad_out and the outputs may have any
// strides (the mixer passes channel-last (B, L, E) memory viewed as (B, E, L)), and with
// `reverse` the scan runs from t = L-1 down to 0 (the backward branch of a bidirectional
// mixer, without flipped copies). B and C are read in place ((B, L, N) with unit stride over n).
// ---------------------------------------------------------------------------------------

template <typename T>
struct Strided {  // a (B, E, L) tensor through its strides (elements)
  const T* p;
  int64_t sb, se, sl;
};
template <typename T>
struct StridedOut {
  T* p;
  int64_t sb, se, sl;
};

template <typename T>
struct Args {
  Strided<T> u, delta, z;    // (B, E, L); z.p null without a gate
  const T* A;                // (E, N) contiguous
  const T* Bm;               // (B, L, N), unit stride over n
  const T* Cm;
  int64_t sBb, sBl, sCb, sCl;
  const T* D;                // (E) or null
  const T* bias;             // (E) or null
  int64_t batch, E, L, N;
  bool softplus, reverse;
  // forward_lanes16 only: image i reads z's image zrows[i] and writes the output's image orows[i] (null: image i),
  // adding to what is there with accumulate
  const int64_t* zrows = nullptr;
  const int64_t* orows = nullptr;
  bool accumulate = false;
  // the lanes kernels of a training branch with dt_proj inside (scan_forward_dt, scan_backward_dt): the raw Δ is
  // Σ_r dtl[b, t, r] dtw[e, r] computed per step (delta.p null), so the (B, E, L) Δ and its gradient are never
  // written out and read back; dtl is (B, L, R) through its strides sdb, sdl (unit stride over r), dtw (E, R)
  const T* dtl = nullptr;
  const T* dtw = nullptr;
  int64_t sdb = 0, sdl = 0, R = 0;
  // the lanes kernels with a z gate: a per-image factor (B,) on the output (a DyVM router's 0/1 gate of this
  // direction, in the training mixer's node), and in the backward on grad_out; null: 1
  const T* scale = nullptr;
};

template <typename T>
struct Grads {
  StridedOut<T> du, ddelta, dz;  // (B, E, L); dz.p null without a gate
  T* dA;      // (E, N)
  T* dB;      // (K, B, L, N) partials, one slab per channel chunk, original time order
  T* dC;      // (K, B, L, N)
  T* dD;      // (E) or null
  T* dbias;   // (E) or null
  T* ddtl = nullptr;  // with Args::dtl: (K, B, L, R) partials of dtl's gradient, one slab per channel chunk
  T* ddtw = nullptr;  // with Args::dtl: (E, R), dtw's gradient (ddelta is then not written)
  // backward_lanes16: the row stride (elements) of the dB, dC and ddtl partials, whose L rows per image follow each
  // other; 0: packed (N, and R). scan_backward_dt sets it to R + 2N: the three interleave as x_proj's output does
  int64_t srow = 0;
  bool dz_accumulate = false;  // backward_lanes16: dz is added to what is there (the other direction's)
  T* dscale = nullptr;  // with Args::scale: (K, B) partials of its gradient, Σ grad_out · (the output before it)
};

// Row pointer of B or C (or a dB/dC partial) at scan step 0 and its step (elements) per scan step.
template <typename T>
DYVM_INLINE const T* bc_base(const T* p, int64_t sb, int64_t sl, int64_t b, int64_t L, bool rev) {
  return p + b * sb + (rev ? (L - 1) * sl : 0);
}

// Δ and Δu of one row (scan order) into dt[0..L), dtu[0..L); sig[t] = sigmoid(raw) if sig != null.
template <typename T>
DYVM_INLINE void row_delta(const T* __restrict__ u, const T* __restrict__ raw, T bias, bool softplus,
                           int64_t L, T* __restrict__ dt, T* __restrict__ dtu, T* __restrict__ sig) {
  if (softplus) {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) {
      const T v = softplus_f(raw[t] + bias);
      dt[t] = v;
      dtu[t] = v * u[t];
    }
    if (sig) {
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) sig[t] = sigmoid_f(raw[t] + bias);
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) {
      const T v = raw[t] + bias;
      dt[t] = v;
      dtu[t] = v * u[t];
    }
  }
}

// o[t] = (y[t] + D u[t]) * silu(z[t]) (the parts that exist), for one row.
template <typename T>
DYVM_INLINE void row_output(const T* __restrict__ u, const T* __restrict__ z, T Dd, int64_t L,
                            const T* __restrict__ y, T* __restrict__ o) {
  if (z) {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) {
      const T zt = z[t];
      o[t] = (y[t] + Dd * u[t]) * (zt * sigmoid_f(zt));
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) o[t] = y[t] + Dd * u[t];
  }
}

// dy = g silu(z), dz = g (y + D u) silu'(z) for one row (dy = g without a gate).
template <typename T>
DYVM_INLINE void row_gate_backward(const T* __restrict__ u, const T* __restrict__ z, T Dd, int64_t L,
                                   const T* __restrict__ go, const T* __restrict__ y,
                                   T* __restrict__ dy, T* __restrict__ dz) {
  if (z) {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) {
      const T zt = z[t];
      const T s = sigmoid_f(zt);
      dy[t] = go[t] * zt * s;
      dz[t] = go[t] * (y[t] + Dd * u[t]) * s * (T(1) + zt * (T(1) - s));
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) dy[t] = go[t];
  }
}

// ddelta = (s1 + u s2) * softplus', du = Δ s2 + D dy; adds (sum dy u, sum ddelta raw).
template <typename T>
DYVM_INLINE void row_finish(const T* __restrict__ u, T Dd, bool softplus, int64_t L,
                            const T* __restrict__ s1, const T* __restrict__ s2, const T* __restrict__ dt,
                            const T* __restrict__ sig, const T* __restrict__ dy,
                            T* __restrict__ ddt, T* __restrict__ du, T& acc_d, T& acc_b) {
  T sd = T(0), sb = T(0);
  if (softplus) {
#pragma omp simd reduction(+ : sd, sb)
    for (int64_t t = 0; t < L; ++t) {
      const T g = (s1[t] + u[t] * s2[t]) * sig[t];
      ddt[t] = g;
      du[t] = dt[t] * s2[t] + Dd * dy[t];
      sd += dy[t] * u[t];
      sb += g;
    }
  } else {
#pragma omp simd reduction(+ : sd, sb)
    for (int64_t t = 0; t < L; ++t) {
      const T g = s1[t] + u[t] * s2[t];
      ddt[t] = g;
      du[t] = dt[t] * s2[t] + Dd * dy[t];
      sd += dy[t] * u[t];
      sb += g;
    }
  }
  acc_d += sd;
  acc_b += sb;
}

constexpr int64_t kBlock = 16;  // channels gathered together (one cache line of a channel-last row)

#if defined(__AVX2__)
// 8 x 8 float transpose in registers: r[i][j] -> r[j][i].
DYVM_INLINE void transpose8x8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#define DYVM_HAVE_TRANSPOSE8 1
#else
#define DYVM_HAVE_TRANSPOSE8 0
#endif

// dst[j ld + off + s] = p[b, e0+j, t(s)] (times ms[s] if ms), j < nb, s < L; t(s) = s or L-1-s.
// With a unit time stride and no reversal a row is one memcpy; otherwise s runs outside j,
// so the accesses of one t (nb channels) are adjacent in memory for channel-last tensors.
template <typename T>
DYVM_INLINE void gather_block(const T* p, int64_t sb, int64_t se, int64_t sl, int64_t b, int64_t e0,
                              int64_t nb, int64_t L, bool rev, const T* __restrict__ ms,
                              T* __restrict__ dst, int64_t ld, int64_t off) {
  const T* __restrict__ src = p + b * sb + e0 * se;
  T* __restrict__ o = dst + off;
  if (!rev && sl == 1 && !ms) {
    for (int64_t j = 0; j < nb; ++j)
      std::memcpy(o + j * ld, src + j * se, static_cast<size_t>(L) * sizeof(T));
    return;
  }
  int64_t s0 = 0;
#if DYVM_HAVE_TRANSPOSE8
  if constexpr (std::is_same<T, float>::value) {
    if (se == 1 && !ms && (nb & 7) == 0) {  // channel-last: 8 x 8 tiles transposed in registers
      for (; s0 + 8 <= L; s0 += 8)
        for (int64_t j0 = 0; j0 < nb; j0 += 8) {
          __m256 r[8];
          for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (rev ? L - 1 - s0 - i : s0 + i) * sl + j0);
          transpose8x8(r);
          for (int j = 0; j < 8; ++j) _mm256_storeu_ps(o + (j0 + j) * ld + s0, r[j]);
        }
    }
  }
#endif
  for (int64_t s = s0; s < L; ++s) {
    const T* __restrict__ st = src + (rev ? L - 1 - s : s) * sl;
    const T mv = ms ? ms[s] : T(1);
    for (int64_t j = 0; j < nb; ++j) o[j * ld + s] = st[j * se] * mv;
  }
}

// p[b, e0+j, t(s)] = src[j ld + s]
template <typename T>
DYVM_INLINE void scatter_block(T* p, int64_t sb, int64_t se, int64_t sl, int64_t b, int64_t e0,
                               int64_t nb, int64_t L, bool rev, const T* __restrict__ src, int64_t ld) {
  T* __restrict__ dst = p + b * sb + e0 * se;
  if (!rev && sl == 1) {
    for (int64_t j = 0; j < nb; ++j)
      std::memcpy(dst + j * se, src + j * ld, static_cast<size_t>(L) * sizeof(T));
    return;
  }
  int64_t s0 = 0;
#if DYVM_HAVE_TRANSPOSE8
  if constexpr (std::is_same<T, float>::value) {
    if (se == 1 && (nb & 7) == 0) {  // channel-last: 8 x 8 tiles transposed in registers
      for (; s0 + 8 <= L; s0 += 8)
        for (int64_t j0 = 0; j0 < nb; j0 += 8) {
          __m256 r[8];
          for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + (j0 + j) * ld + s0);
          transpose8x8(r);
          for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (rev ? L - 1 - s0 - i : s0 + i) * sl + j0, r[i]);
        }
    }
  }
#endif
  for (int64_t s = s0; s < L; ++s) {
    T* __restrict__ dt = dst + (rev ? L - 1 - s : s) * sl;
    for (int64_t j = 0; j < nb; ++j) dt[j * se] = src[j * ld + s];
  }
}

// Blocks of up to kBlock channels of one image, gathered in scan order: row j at base + j ld.
template <typename T>
struct BlockIn {
  T *u, *raw, *z;
  int64_t ld;
  DYVM_INLINE void load(const Args<T>& a, int64_t b, int64_t e0, int64_t nb) {
    gather_block(a.u.p, a.u.sb, a.u.se, a.u.sl, b, e0, nb, a.L, a.reverse, static_cast<const T*>(nullptr), u, ld, 0);
    gather_block(a.delta.p, a.delta.sb, a.delta.se, a.delta.sl, b, e0, nb, a.L, a.reverse,
                 static_cast<const T*>(nullptr), raw, ld, 0);
    if (a.z.p)
      gather_block(a.z.p, a.z.sb, a.z.se, a.z.sl, b, e0, nb, a.L, a.reverse, static_cast<const T*>(nullptr), z, ld, 0);
  }
};

template <typename T>
DYVM_INLINE void scatter_out(const StridedOut<T>& o, int64_t b, int64_t e0, int64_t nb, int64_t L, bool rev,
                             const T* src, int64_t ld) {
  scatter_block(o.p, o.sb, o.se, o.sl, b, e0, nb, L, rev, src, ld);
}
template <typename T>
DYVM_INLINE void gather_in(const Strided<T>& x, int64_t b, int64_t e0, int64_t nb, int64_t L, bool rev,
                           T* dst, int64_t ld) {
  gather_block(x.p, x.sb, x.se, x.sl, b, e0, nb, L, rev, static_cast<const T*>(nullptr), dst, ld, 0);
}

// A 64-byte aligned float/double scratch buffer.
template <typename T>
struct Scratch {
  std::vector<T> mem;
  T* base;
  explicit Scratch(size_t n) : mem(n + 64 / sizeof(T)) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(mem.data());
    base = reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
  }
};

// ----------------------------- generic path: any N, float/double ------------------------
// Rows are processed in blocks of up to kBlock channels of one image (gathered together).

template <typename T>
void forward_rows(const Args<T>& a, const StridedOut<T>& out, int64_t r0, int64_t r1) {
  const int64_t L = a.L, E = a.E, N = a.N, ld = L;
  Scratch<T> s(3 * L + 4 * kBlock * ld + 2 * N);
  T* __restrict__ dt = s.base;
  T* __restrict__ dtu = dt + L;
  T* __restrict__ y = dtu + L;
  T* __restrict__ ob = y + L;
  BlockIn<T> in{ob + kBlock * ld, ob + 2 * kBlock * ld, ob + 3 * kBlock * ld, ld};
  T* __restrict__ h = ob + 4 * kBlock * ld;
  T* __restrict__ Ar = h + N;
  const int64_t stB = a.reverse ? -a.sBl : a.sBl, stC = a.reverse ? -a.sCl : a.sCl;
  for (int64_t row0 = r0; row0 < r1;) {
    const int64_t b = row0 / E, e0 = row0 % E;
    const int64_t nb = std::min(std::min(kBlock, r1 - row0), E - e0);
    in.load(a, b, e0, nb);
    const T* __restrict__ Bs = bc_base(a.Bm, a.sBb, a.sBl, b, L, a.reverse);
    const T* __restrict__ Cs = bc_base(a.Cm, a.sCb, a.sCl, b, L, a.reverse);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t d = e0 + j;
      const T* ur = in.u + j * ld;
      row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : T(0), a.softplus, L, dt, dtu, static_cast<T*>(nullptr));
      for (int64_t n = 0; n < N; ++n) {
        h[n] = T(0);
        Ar[n] = a.A[d * N + n];
      }
      for (int64_t t = 0; t < L; ++t) {
        const T dtt = dt[t], dut = dtu[t];
        const T* __restrict__ Bt = Bs + t * stB;
        const T* __restrict__ Ct = Cs + t * stC;
        T acc = T(0);
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          const T hn = exp_f(dtt * Ar[n]) * h[n] + dut * Bt[n];
          h[n] = hn;
          acc += hn * Ct[n];
        }
        y[t] = acc;
      }
      row_output(ur, a.z.p ? in.z + j * ld : static_cast<T*>(nullptr), a.D ? a.D[d] : T(0), L, y, ob + j * ld);
    }
    scatter_out(out, b, e0, nb, L, a.reverse, ob, ld);
    row0 += nb;
  }
}

template <typename T>
void backward_chunk(const Args<T>& a, const Strided<T>& gout, const Grads<T>& g,
                    int64_t chunk, int64_t d0, int64_t d1) {
  const int64_t L = a.L, Bsz = a.batch, N = a.N, ld = L;
  Scratch<T> s(7 * L + 7 * kBlock * ld + 2 * (L + 1) * N + 2 * N + kBlock * (N + 2));
  T* __restrict__ dt = s.base;
  T* __restrict__ dtu = dt + L;
  T* __restrict__ sig = dtu + L;
  T* __restrict__ yv = sig + L;
  T* __restrict__ dyv = yv + L;
  T* __restrict__ s1 = dyv + L;
  T* __restrict__ s2 = s1 + L;
  T* __restrict__ gob = s2 + L;                 // grad_out block
  T* __restrict__ dub = gob + kBlock * ld;      // du block
  T* __restrict__ ddb = dub + kBlock * ld;      // ddelta block
  T* __restrict__ dzb = ddb + kBlock * ld;      // dz block
  BlockIn<T> in{dzb + kBlock * ld, dzb + 2 * kBlock * ld, dzb + 3 * kBlock * ld, ld};
  T* __restrict__ Hs = dzb + 4 * kBlock * ld;   // Hs[(t+1) N + n] = h_t[n]; first row 0
  T* __restrict__ Ea = Hs + (L + 1) * N;        // Ea[t N + n] = exp(Δ_t A[n]); last row 0
  T* __restrict__ dh = Ea + (L + 1) * N;
  T* __restrict__ h = dh + N;
  T* __restrict__ dAacc = h + N;                // kBlock x N
  T* __restrict__ dDacc = dAacc + kBlock * N;
  T* __restrict__ dbacc = dDacc + kBlock;
  std::fill(Hs, Hs + 2 * (L + 1) * N, T(0));
  T* __restrict__ dBpart = g.dB + chunk * Bsz * L * N;
  T* __restrict__ dCpart = g.dC + chunk * Bsz * L * N;
  const int64_t stB = a.reverse ? -a.sBl : a.sBl, stC = a.reverse ? -a.sCl : a.sCl;
  const int64_t stP = a.reverse ? -N : N;  // partials are (B, L, N) contiguous

  for (int64_t e0 = d0; e0 < d1; e0 += kBlock) {
    const int64_t nb = std::min(kBlock, d1 - e0);
    std::fill(dAacc, dAacc + kBlock * (N + 2), T(0));
    for (int64_t b = 0; b < Bsz; ++b) {
      in.load(a, b, e0, nb);
      gather_in(gout, b, e0, nb, L, a.reverse, gob, ld);
      const T* __restrict__ Bs = bc_base(a.Bm, a.sBb, a.sBl, b, L, a.reverse);
      const T* __restrict__ Cs = bc_base(a.Cm, a.sCb, a.sCl, b, L, a.reverse);
      T* __restrict__ dBs = dBpart + b * L * N + (a.reverse ? (L - 1) * N : 0);
      T* __restrict__ dCs = dCpart + b * L * N + (a.reverse ? (L - 1) * N : 0);
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t d = e0 + j;
        const T* Ar = a.A + d * N;
        T* dAj = dAacc + j * N;
        const T Dd = a.D ? a.D[d] : T(0);
        const T* ur = in.u + j * ld;
        const T* zr = a.z.p ? in.z + j * ld : static_cast<T*>(nullptr);
        row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : T(0), a.softplus, L, dt, dtu,
                  a.softplus ? sig : static_cast<T*>(nullptr));
        for (int64_t n = 0; n < N; ++n) h[n] = T(0);
        for (int64_t t = 0; t < L; ++t) {
          const T dtt = dt[t], dut = dtu[t];
          const T* __restrict__ Bt = Bs + t * stB;
          const T* __restrict__ Ct = Cs + t * stC;
          T* __restrict__ Et = Ea + t * N;
          T* __restrict__ Ht = Hs + (t + 1) * N;
          T acc = T(0);
#pragma omp simd reduction(+ : acc)
          for (int64_t n = 0; n < N; ++n) {
            const T e = exp_f(dtt * Ar[n]);
            const T hn = e * h[n] + dut * Bt[n];
            Et[n] = e;
            h[n] = hn;
            Ht[n] = hn;
            acc += hn * Ct[n];
          }
          yv[t] = acc;
        }
        row_gate_backward(ur, zr, Dd, L, gob + j * ld, yv, dyv, dzb + j * ld);
        for (int64_t n = 0; n < N; ++n) dh[n] = T(0);
        for (int64_t t = L - 1; t >= 0; --t) {
          const T dyt = dyv[t], dtt = dt[t], dut = dtu[t];
          const T* __restrict__ Bt = Bs + t * stB;
          const T* __restrict__ Ct = Cs + t * stC;
          const T* __restrict__ Enext = Ea + (t + 1) * N;
          const T* __restrict__ Et = Ea + t * N;
          const T* __restrict__ Ht = Hs + (t + 1) * N;
          const T* __restrict__ Hprev = Hs + t * N;
          T* __restrict__ dBt = dBs + t * stP;
          T* __restrict__ dCt = dCs + t * stP;
          T acc1 = T(0), acc2 = T(0);
#pragma omp simd reduction(+ : acc1, acc2)
          for (int64_t n = 0; n < N; ++n) {
            const T dhn = Enext[n] * dh[n] + dyt * Ct[n];
            dh[n] = dhn;
            const T x = dhn * Et[n] * Hprev[n];
            dAj[n] += x * dtt;
            acc1 += x * Ar[n];
            acc2 += dhn * Bt[n];
            dBt[n] += dhn * dut;
            dCt[n] += dyt * Ht[n];
          }
          s1[t] = acc1;
          s2[t] = acc2;
        }
        row_finish(ur, Dd, a.softplus, L, s1, s2, dt, sig, dyv, ddb + j * ld, dub + j * ld, dDacc[j], dbacc[j]);
      }
      if (a.z.p) scatter_out(g.dz, b, e0, nb, L, a.reverse, dzb, ld);
      scatter_out(g.ddelta, b, e0, nb, L, a.reverse, ddb, ld);
      scatter_out(g.du, b, e0, nb, L, a.reverse, dub, ld);
    }
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t d = e0 + j;
      for (int64_t n = 0; n < N; ++n) g.dA[d * N + n] = dAacc[j * N + n];
      if (g.dD) g.dD[d] = dDacc[j];
      if (g.dbias) g.dbias[d] = dbacc[j];
    }
  }
}

#if DYVM_HAVE_N16

#if DYVM_N16_AVX512

typedef float v16f __attribute__((vector_size(64)));

DYVM_INLINE v16f load16(const float* p) {
  v16f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
DYVM_INLINE void store16(float* p, v16f v) { std::memcpy(p, &v, sizeof(v)); }

// 2^t for 16 lanes as 2^f 2^floor(t), f = t - floor(t) in [0, 1): vreduceps gives f in one instruction (AVX512DQ;
// else vrndscaleps and a subtraction), a degree-5 polynomial 2^f (relative-error minimax on [0, 1) with p(0) = 1:
// 8.3e-8 before rounding, 1.6e-7 (~2.7 ulp) measured in float32 with FMAs), and vscalefps multiplies by 2^floor(t)
// reading t itself. Every range is handled with no clamping: finite t <= -150 gives 0, t >= 128 inf, NaN stays NaN.
// One instruction fewer per exponential than rounding to nearest and subtracting (docs/speed/2026-12-04f-avx512).
// The recurrence's inner step is bound by the FMA pipes (one 512-bit FMA or multiply a cycle on Zen 4; vreduceps
// and vscalefps issue beside them), so degree 5 instead of 6 (2.0e-9) takes 0.90x its time
// (docs/speed/2026-12-05e-avx512).
DYVM_INLINE v16f exp2_v16(v16f t) {
  const __m512 tt = reinterpret_cast<__m512>(t);
#if defined(__AVX512DQ__)
  const v16f f = reinterpret_cast<v16f>(_mm512_reduce_ps(tt, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
#else
  const v16f f = reinterpret_cast<v16f>(
      _mm512_sub_ps(tt, _mm512_roundscale_ps(tt, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)));
#endif
  v16f p = v16f{} + 1.867216110e-03f;
  p = p * f + 9.016941487e-03f;
  p = p * f + 5.579984914e-02f;
  p = p * f + 2.401645385e-01f;
  p = p * f + 6.931512913e-01f;
  p = p * f + 1.0f;
  return reinterpret_cast<v16f>(_mm512_scalef_ps(reinterpret_cast<__m512>(p), tt));
}

// exp, sigmoid and silu on 16 lanes, as exp_f and sigmoid_f on exp2_v16. silu(z) = z / (1 + exp(-z)), one division,
// where the omp simd loops of the scalar sigmoid_f took a longer exp and a division and two products (z < -88:
// exp(-z) = inf gives -0, silu's limit).
DYVM_INLINE v16f exp_v16(v16f x) { return exp2_v16(x * 1.44269504088896341f); }
DYVM_INLINE v16f sigmoid_v16(v16f z) { return 1.0f / (exp_v16(-z) + 1.0f); }
DYVM_INLINE v16f silu_v16(v16f z) { return z / (exp_v16(-z) + 1.0f); }

// exp(-|x|) and max(0, x) on 16 lanes, the two parts of softplus (max with x second: vmaxps returns its second
// operand when either is NaN, so NaN stays NaN)
DYVM_INLINE v16f exp_neg_abs_v16(v16f x) {
  return exp_v16(-reinterpret_cast<v16f>(_mm512_abs_ps(reinterpret_cast<__m512>(x))));
}
DYVM_INLINE v16f relu_v16(v16f x) {
  return reinterpret_cast<v16f>(_mm512_max_ps(_mm512_setzero_ps(), reinterpret_cast<__m512>(x)));
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)) for 16 lanes: softplus_f's formula with exp2_v16, in vectors where the
// omp simd loops of the scalar version took a longer exp (the forward's Δ pass 0.57x the time, with silu_v16's gate
// the whole Vim-T scan call 0.81x; docs/speed/2026-12-05e-avx512)
DYVM_INLINE v16f softplus_v16(v16f x) { return relu_v16(x) + log1p_unit(exp_neg_abs_v16(x)); }

// softplus(x) and sigmoid(x) from one exp(-|x|) = e (the backward's pre-pass), as softplus_sigmoid_f; softplus
// exactly as softplus_v16, so the backward recomputes the forward's Δ to the bit
DYVM_INLINE void softplus_sigmoid_v16(v16f x, v16f& sp, v16f& sg) {
  const v16f e = exp_neg_abs_v16(x);
  sp = relu_v16(x) + log1p_unit(e);
  const __mmask16 neg = _mm512_cmp_ps_mask(reinterpret_cast<__m512>(x), _mm512_setzero_ps(), _CMP_LT_OQ);
  const v16f num = reinterpret_cast<v16f>(_mm512_mask_blend_ps(neg, _mm512_set1_ps(1.0f), reinterpret_cast<__m512>(e)));
  sg = num / (e + 1.0f);
}

// Row sums of a 16 x 16 block (row-major at p): lane i of the result = sum_n p[16 i + n].
// A transpose-add tree (two-source shuffles + adds, ~3 instructions per sum instead of a
// 4-level horizontal reduction per row). The tree leaves the rows in bit-reversed lane
// order; loading the rows in bit-reversed order (an involution) puts them back in order.
DYVM_INLINE v16f row_sums16(const float* p) {
  const v16f p0 = load16(p + 16 * 0), p1 = load16(p + 16 * 8), p2 = load16(p + 16 * 4),
             p3 = load16(p + 16 * 12), p4 = load16(p + 16 * 2), p5 = load16(p + 16 * 10),
             p6 = load16(p + 16 * 6), p7 = load16(p + 16 * 14), p8 = load16(p + 16 * 1),
             p9 = load16(p + 16 * 9), p10 = load16(p + 16 * 5), p11 = load16(p + 16 * 13),
             p12 = load16(p + 16 * 3), p13 = load16(p + 16 * 11), p14 = load16(p + 16 * 7),
             p15 = load16(p + 16 * 15);
#define DYVM_L1(a, b)                                                                     \
  (__builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) + \
   __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
#define DYVM_L2(a, b)                                                                     \
  (__builtin_shufflevector(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) + \
   __builtin_shufflevector(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
#define DYVM_L3(a, b)                                                                     \
  (__builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) + \
   __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
#define DYVM_L4(a, b)                                                                     \
  (__builtin_shufflevector(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) + \
   __builtin_shufflevector(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
  const v16f q0 = DYVM_L1(p0, p1), q1 = DYVM_L1(p2, p3), q2 = DYVM_L1(p4, p5),
             q3 = DYVM_L1(p6, p7), q4 = DYVM_L1(p8, p9), q5 = DYVM_L1(p10, p11),
             q6 = DYVM_L1(p12, p13), q7 = DYVM_L1(p14, p15);
  const v16f r0 = DYVM_L2(q0, q1), r1 = DYVM_L2(q2, q3), r2 = DYVM_L2(q4, q5),
             r3 = DYVM_L2(q6, q7);
  const v16f s0 = DYVM_L3(r0, r1), s1 = DYVM_L3(r2, r3);
  return DYVM_L4(s0, s1);
#undef DYVM_L1
#undef DYVM_L2
#undef DYVM_L3
#undef DYVM_L4
}

// Sums of 8 rows (8 floats each) → lane i = sum of row i: a horizontal-add tree (as the AVX2 build's).
DYVM_INLINE __m256 row_sums8(const __m256* r) {
  const __m256 a01 = _mm256_hadd_ps(r[0], r[1]), a23 = _mm256_hadd_ps(r[2], r[3]);
  const __m256 a45 = _mm256_hadd_ps(r[4], r[5]), a67 = _mm256_hadd_ps(r[6], r[7]);
  const __m256 b0 = _mm256_hadd_ps(a01, a23), b1 = _mm256_hadd_ps(a45, a67);
  return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
}
// The two 8-lane halves of a 16-lane vector added: row_sums8 of 8 of these sums each vector's 16 lanes.
DYVM_INLINE __m256 fold8(v16f v) {
  const __m512 x = reinterpret_cast<__m512>(v);
  return _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
}

#else

// AVX2 (no AVX-512): a 16-lane vector is a pair of 8-lane registers, with the operators the
// kernels use. GCC's own 64-byte vector type would split into scalars here.
struct v16f {
  __m256 lo, hi;
};
DYVM_INLINE v16f operator+(v16f a, v16f b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
DYVM_INLINE v16f operator-(v16f a, v16f b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
DYVM_INLINE v16f operator*(v16f a, v16f b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
DYVM_INLINE v16f operator*(v16f a, float s) {
  const __m256 v = _mm256_set1_ps(s);
  return {_mm256_mul_ps(a.lo, v), _mm256_mul_ps(a.hi, v)};
}
DYVM_INLINE v16f& operator+=(v16f& a, v16f b) { return a = a + b; }

DYVM_INLINE v16f load16(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
DYVM_INLINE void store16(float* p, v16f v) {
  _mm256_storeu_ps(p, v.lo);
  _mm256_storeu_ps(p + 8, v.hi);
}

// 2^t for 8 lanes: exp2_f lane by lane (the same clamps, rounding trick, polynomial and
// exponent-bit scaling, so the same results). max/min return their second operand for NaN,
// so NaN stays NaN.
DYVM_INLINE __m256 exp2_v8(__m256 t) {
  t = _mm256_min_ps(_mm256_set1_ps(129.0f), _mm256_max_ps(_mm256_set1_ps(-126.0f), t));
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 v = _mm256_add_ps(t, magic);
  const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(v, magic));
  __m256 p = _mm256_set1_ps(3.069162316e-04f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.679986243e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.923697792e-02f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.110065755e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(4.804529378e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.386294411e+00f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0f));
  const __m256i bits = _mm256_sub_epi32(_mm256_castps_si256(v), _mm256_set1_epi32(0x4B400000 - 126));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(bits, 23)));
}
DYVM_INLINE v16f exp2_v16(v16f t) { return {exp2_v8(t.lo), exp2_v8(t.hi)}; }

// Sums of 8 rows (8 floats each) → lane i = sum of row i: a horizontal-add tree.
DYVM_INLINE __m256 row_sums8(const __m256* r) {
  const __m256 a01 = _mm256_hadd_ps(r[0], r[1]), a23 = _mm256_hadd_ps(r[2], r[3]);
  const __m256 a45 = _mm256_hadd_ps(r[4], r[5]), a67 = _mm256_hadd_ps(r[6], r[7]);
  const __m256 b0 = _mm256_hadd_ps(a01, a23), b1 = _mm256_hadd_ps(a45, a67);  // rows 0-3 | 4-7, per 128-bit half
  return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
}
// The two 8-lane halves of a 16-lane vector added: row_sums8 of 8 of these sums each vector's 16 lanes.
DYVM_INLINE __m256 fold8(v16f v) { return _mm256_add_ps(v.lo, v.hi); }
// Row sums of a 16 x 16 block (row-major at p): lane i of the result = sum_n p[16 i + n].
DYVM_INLINE v16f row_sums16(const float* p) {
  __m256 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm256_add_ps(_mm256_loadu_ps(p + 16 * i), _mm256_loadu_ps(p + 16 * i + 8));
  return {row_sums8(r), row_sums8(r + 8)};
}

#endif  // DYVM_N16_AVX512

// The backward's reverse pass needs exp(Δ_t A) again. AVX2 (two halves of ~14 instructions) stores
// it in the recompute pass and reads it back; AVX-512 (9 instructions) does so for short sequences,
// whose 64 bytes per step stay in L1, and recomputes it for long ones. On an AVX-512 Xeon the demo's
// training steps (L = 50) ran 1.04x as fast with storing (interleaved, docs/speed/2026-12-01-intel);
// single-call runs in separate processes there suggested storing is slower at L = 197.
// -DDYVM_STORE_DECAY_MAX_L=0 builds the always-recompute AVX-512 kernel (for A/B runs).
#ifndef DYVM_STORE_DECAY_MAX_L
#define DYVM_STORE_DECAY_MAX_L 64
#endif
DYVM_INLINE bool store_decay(int64_t L) { return !DYVM_N16_AVX512 || L <= DYVM_STORE_DECAY_MAX_L; }

DYVM_INLINE int64_t round16(int64_t n) { return (n + 15) & ~int64_t(15); }

// The per-step vectors whose sums over n are needed (C_t h_t; X_t A and dh_t B_t in the
// backward) go into a 16-row ring buffer indexed by t mod 16 that is reduced by row_sums16
// each time 16 steps are complete (out[t0 + i] = sum of row i). The padding rows of a partial
// block only feed output lanes >= L, which are never read.



void forward_rows_n16(const Args<float>& a, const StridedOut<float>& out, int64_t r0, int64_t r1) {
  const int64_t L = a.L, E = a.E, Lp = round16(L), ld = Lp;
  Scratch<float> s(256 + 3 * Lp + 4 * kBlock * ld);
  float* __restrict__ ring = s.base;        // ring[16 (t mod 16) + n] = C_t[n] h_t[n]
  float* __restrict__ y = ring + 256;
  float* __restrict__ dt = y + Lp;
  float* __restrict__ dtu = dt + Lp;
  float* __restrict__ ob = dtu + Lp;
  BlockIn<float> in{ob + kBlock * ld, ob + 2 * kBlock * ld, ob + 3 * kBlock * ld, ld};
  std::fill(ring, ring + 256, 0.0f);
  const int64_t stB = a.reverse ? -a.sBl : a.sBl, stC = a.reverse ? -a.sCl : a.sCl;
  for (int64_t row0 = r0; row0 < r1;) {
    const int64_t b = row0 / E, e0 = row0 % E;
    const int64_t nb = std::min(std::min(kBlock, r1 - row0), E - e0);
    in.load(a, b, e0, nb);
    const float* __restrict__ Bs = bc_base(a.Bm, a.sBb, a.sBl, b, L, a.reverse);
    const float* __restrict__ Cs = bc_base(a.Cm, a.sCb, a.sCl, b, L, a.reverse);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t d = e0 + j;
      const float* ur = in.u + j * ld;
      // Δ and the output over the padded row (Lp, a multiple of 16): whole vectors instead of a scalar tail
      // (a call at L = 15 ~35% faster); the padding lanes are computed but never scattered
      row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : 0.0f, a.softplus, Lp, dt, dtu, static_cast<float*>(nullptr));
      const v16f A2 = load16(a.A + d * 16) * 1.44269504088896341f;
      v16f h = {};
      for (int64_t t = 0; t < L; ++t) {
        h = exp2_v16(A2 * dt[t]) * h + load16(Bs + t * stB) * dtu[t];
        store16(ring + 16 * (t & 15), h * load16(Cs + t * stC));
        if ((t & 15) == 15) store16(y + (t - 15), row_sums16(ring));
      }
      if (L & 15) store16(y + (L & ~int64_t(15)), row_sums16(ring));
      row_output(ur, a.z.p ? in.z + j * ld : static_cast<float*>(nullptr), a.D ? a.D[d] : 0.0f, Lp, y, ob + j * ld);
    }
    scatter_out(out, b, e0, nb, L, a.reverse, ob, ld);
    row0 += nb;
  }
}

void backward_chunk_n16(const Args<float>& a, const Strided<float>& gout,
                        const Grads<float>& g, int64_t chunk, int64_t d0, int64_t d1) {
  const int64_t L = a.L, Bsz = a.batch, Lp = round16(L), ld = Lp;
  const bool keep_decay = store_decay(L);
  Scratch<float> s(16 * (L + 1) + 2 * 256 + 7 * Lp + 7 * kBlock * ld + kBlock * 18 + (keep_decay ? 16 * L : 0));
  float* __restrict__ Hs = s.base;              // Hs[16 (t+1) + n] = h_t[n]; first row 0
  float* __restrict__ ring1 = Hs + 16 * (L + 1);  // C_t h_t, then X_t A
  float* __restrict__ ring2 = ring1 + 256;        // dh_t B_t
  float* __restrict__ dt = ring2 + 256;
  float* __restrict__ dtu = dt + Lp;
  float* __restrict__ sig = dtu + Lp;
  float* __restrict__ yv = sig + Lp;
  float* __restrict__ dyv = yv + Lp;
  float* __restrict__ s1 = dyv + Lp;
  float* __restrict__ s2 = s1 + Lp;
  float* __restrict__ gob = s2 + Lp;
  float* __restrict__ dub = gob + kBlock * ld;
  float* __restrict__ ddb = dub + kBlock * ld;
  float* __restrict__ dzb = ddb + kBlock * ld;
  BlockIn<float> in{dzb + kBlock * ld, dzb + 2 * kBlock * ld, dzb + 3 * kBlock * ld, ld};
  float* __restrict__ dAacc = dzb + 4 * kBlock * ld;  // kBlock x 16
  float* __restrict__ dDacc = dAacc + kBlock * 16;
  float* __restrict__ dbacc = dDacc + kBlock;
  float* __restrict__ Es = dbacc + kBlock;        // Es[16 t + n] = exp(Δ_t A_n) (keep_decay only)
  std::fill(s.base, s.base + 16 * (L + 1) + 2 * 256, 0.0f);
  float* __restrict__ dBpart = g.dB + chunk * Bsz * L * 16;
  float* __restrict__ dCpart = g.dC + chunk * Bsz * L * 16;
  const int64_t stB = a.reverse ? -a.sBl : a.sBl, stC = a.reverse ? -a.sCl : a.sCl;
  const int64_t stP = a.reverse ? -16 : 16;

  for (int64_t e0 = d0; e0 < d1; e0 += kBlock) {
    const int64_t nb = std::min(kBlock, d1 - e0);
    std::fill(dAacc, dAacc + kBlock * 18, 0.0f);
    for (int64_t b = 0; b < Bsz; ++b) {
      in.load(a, b, e0, nb);
      gather_in(gout, b, e0, nb, L, a.reverse, gob, ld);
      const float* __restrict__ Bs = bc_base(a.Bm, a.sBb, a.sBl, b, L, a.reverse);
      const float* __restrict__ Cs = bc_base(a.Cm, a.sCb, a.sCl, b, L, a.reverse);
      float* __restrict__ dBs = dBpart + b * L * 16 + (a.reverse ? (L - 1) * 16 : 0);
      float* __restrict__ dCs = dCpart + b * L * 16 + (a.reverse ? (L - 1) * 16 : 0);
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t d = e0 + j;
        const v16f Av = load16(a.A + d * 16);
        const v16f A2 = Av * 1.44269504088896341f;
        const float Dd = a.D ? a.D[d] : 0.0f;
        const float* ur = in.u + j * ld;
        const float* zr = a.z.p ? in.z + j * ld : static_cast<float*>(nullptr);
        row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : 0.0f, a.softplus, L, dt, dtu,
                  a.softplus ? sig : static_cast<float*>(nullptr));
        // recompute the states (and C_t h_t for the gate's y)
        v16f h = {};
        if (zr) {
          for (int64_t t = 0; t < L; ++t) {
            const v16f e = exp2_v16(A2 * dt[t]);
            if (keep_decay) store16(Es + 16 * t, e);
            h = e * h + load16(Bs + t * stB) * dtu[t];
            store16(Hs + 16 * (t + 1), h);
            store16(ring1 + 16 * (t & 15), h * load16(Cs + t * stC));
            if ((t & 15) == 15) store16(yv + (t - 15), row_sums16(ring1));
          }
          if (L & 15) store16(yv + (L & ~int64_t(15)), row_sums16(ring1));
        } else {
          for (int64_t t = 0; t < L; ++t) {
            const v16f e = exp2_v16(A2 * dt[t]);
            if (keep_decay) store16(Es + 16 * t, e);
            h = e * h + load16(Bs + t * stB) * dtu[t];
            store16(Hs + 16 * (t + 1), h);
          }
        }
        row_gate_backward(ur, zr, Dd, L, gob + j * ld, yv, dyv, dzb + j * ld);
        // reverse recurrence; the decay is read back or recomputed (store_decay); exp(Δ_{t+1} A),
        // h_t carry over in registers
        v16f dh = {}, e_next = {};
        v16f h_t = load16(Hs + 16 * L);
        v16f dA = load16(dAacc + j * 16);
        for (int64_t t = L - 1; t >= 0; --t) {
          const float dyt = dyv[t];
          const v16f e_t = keep_decay ? load16(Es + 16 * t) : exp2_v16(A2 * dt[t]);
          const v16f h_prev = load16(Hs + 16 * t);
          const v16f Bt = load16(Bs + t * stB);
          dh = e_next * dh + load16(Cs + t * stC) * dyt;
          const v16f x = dh * e_t * h_prev;
          dA += x * dt[t];
          store16(ring1 + 16 * (t & 15), x * Av);
          store16(ring2 + 16 * (t & 15), dh * Bt);
          float* dBt = dBs + t * stP;
          float* dCt = dCs + t * stP;
          store16(dBt, load16(dBt) + dh * dtu[t]);
          store16(dCt, load16(dCt) + h_t * dyt);
          if ((t & 15) == 0) {
            store16(s1 + t, row_sums16(ring1));
            store16(s2 + t, row_sums16(ring2));
          }
          e_next = e_t;
          h_t = h_prev;
        }
        store16(dAacc + j * 16, dA);
        row_finish(ur, Dd, a.softplus, L, s1, s2, dt, sig, dyv, ddb + j * ld, dub + j * ld, dDacc[j], dbacc[j]);
      }
      if (a.z.p) scatter_out(g.dz, b, e0, nb, L, a.reverse, dzb, ld);
      scatter_out(g.ddelta, b, e0, nb, L, a.reverse, ddb, ld);
      scatter_out(g.du, b, e0, nb, L, a.reverse, dub, ld);
    }
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t d = e0 + j;
      std::memcpy(g.dA + d * 16, dAacc + j * 16, 16 * sizeof(float));
      if (g.dD) g.dD[d] = dDacc[j];
      if (g.dbias) g.dbias[d] = dbacc[j];
    }
  }
}

// A's (16 channels from e0) x (16 states) block with the channels in the lanes: At2[16 n + lane] =
// A[e0 + lane][n] log2 e (the exps' argument scale), and At the same unscaled where not null.
DYVM_INLINE void lanes_A(const float* A, int64_t e0, float* __restrict__ At2, float* __restrict__ At) {
  for (int n = 0; n < 16; ++n)
    for (int j = 0; j < 16; ++j) {
      const float v = A[(e0 + j) * 16 + n];
      At2[16 * n + j] = v * 1.44269504088896341f;
      if (At) At[16 * n + j] = v;
    }
}

// dtw's (16 channels from e0) x R block with the channels in the lanes: Wt[16 r + lane] = dtw[e0 + lane][r]
DYVM_INLINE void lanes_dtw(const float* dtw, int64_t R, int64_t e0, float* __restrict__ Wt) {
  for (int64_t r = 0; r < R; ++r)
    for (int j = 0; j < 16; ++j) Wt[16 * r + j] = dtw[(e0 + j) * R + r];
}

// The raw Δ of 16 channels at one step: Σ_r dt[r] Wt[r] (dt_proj without bias, as the (M, R) x (R, E) product)
DYVM_INLINE v16f raw_delta16(const float* __restrict__ dt, const float* __restrict__ Wt, int64_t R) {
  v16f acc = load16(Wt) * dt[0];
  for (int64_t r = 1; r < R; ++r) acc += load16(Wt + 16 * r) * dt[r];
  return acc;
}

// f lane by lane on 16 lanes (the scalar function vectorised by omp simd, as in row_delta)
template <typename F>
DYVM_INLINE v16f map16(v16f x, F f) {
  alignas(64) float in[16], o[16];
  store16(in, x);
#pragma omp simd
  for (int i = 0; i < 16; ++i) o[i] = f(in[i]);
  return load16(o);
}

// The forward with 16 channels in the vector lanes, for the layout backward_lanes16 serves (channel-last
// float rows of 16 states, whole blocks of 16 channels): a time step of a block is one contiguous load or
// store straight from and to the tensors (no gathered rows), and the recurrence advances the 16 states of
// 16 channels per step (16 independent exps) with C_t·h_t summed over the state in registers. Δ = softplus(...)
// and Δu are computed for the whole sequence before the recurrence, and the gate after it, as long vector loops
// over (L, 16) scratch (16-lane loops where the build prefers 512-bit vectors): inside the recurrence's step their
// latency chains (exp, divisions) stalled it (this way the kernel takes 0.88-0.92x the time,
// docs/speed/2026-12-02c-intel). The same outputs as forward_rows_n16 up to float rounding. Units [k0, k1)
// of (image, block of 16 channels).
void forward_lanes16(const Args<float>& a, const StridedOut<float>& out, int64_t k0, int64_t k1) {
  const int64_t L = a.L, nblk = a.E / 16;
  alignas(64) float At2[256];  // At2[16 n + lane] = A[d][n] log2 e
  Scratch<float> sc(3 * 16 * L + 16 * a.R);
  float* __restrict__ DT = sc.base;  // per scan step s, 16 lanes: Δ, then z
  float* __restrict__ DTU = DT + 16 * L;  // Δu
  float* __restrict__ Y = DTU + 16 * L;   // C_t·h_t + D u_t
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t b = k / nblk, e0 = (k % nblk) * 16;
    lanes_A(a.A, e0, At2, nullptr);
    float* __restrict__ Wt = Y + 16 * L;  // dt_proj's block (fused branch)
    if (a.dtl) lanes_dtw(a.dtw, a.R, e0, Wt);
    const float* dtlb = a.dtl ? a.dtl + b * a.sdb : nullptr;
    const v16f bias = a.bias ? load16(a.bias + e0) : v16f{};
    const v16f Dv = a.D ? load16(a.D + e0) : v16f{};
    const float* up = a.u.p + b * a.u.sb + e0;
    const float* dp = a.delta.p ? a.delta.p + b * a.delta.sb + e0 : nullptr;
    const float* zp = a.z.p ? a.z.p + (a.zrows ? a.zrows[b] : b) * a.z.sb + e0 : nullptr;
    float* op = out.p + (a.orows ? a.orows[b] : b) * out.sb + e0;
    const bool acc = a.accumulate;
    const float* Bb = a.Bm + b * a.sBb;
    const float* Cb = a.Cm + b * a.sCb;
    // the next unit's rows of u, z and the output, fetched into cache during this unit's recurrence (as
    // backward_lanes16 does): one cache line per step of each, strided by the tensors' rows
    const bool next = k + 1 < k1;
    const int64_t nb = (k + 1) / nblk, ne0 = ((k + 1) % nblk) * 16;
    const float* nu = next ? a.u.p + nb * a.u.sb + ne0 : nullptr;
    const float* nz = next && zp ? a.z.p + (a.zrows ? a.zrows[nb] : nb) * a.z.sb + ne0 : nullptr;
    const float* no = next ? out.p + (a.orows ? a.orows[nb] : nb) * out.sb + ne0 : nullptr;
#if DYVM_N16_AVX512
    for (int64_t s = 0; s < L; ++s) {  // scan order: Δ and Δu in 16-lane vectors
      const int64_t t = a.reverse ? L - 1 - s : s;
      v16f dt = (dp ? load16(dp + t * a.delta.sl) : raw_delta16(dtlb + t * a.sdl, Wt, a.R)) + bias;
      if (a.softplus) dt = softplus_v16(dt);
      store16(DT + 16 * s, dt);
      store16(DTU + 16 * s, load16(up + t * a.u.sl) * dt);
    }
#else
    for (int64_t s = 0; s < L; ++s) {  // scan order
      const int64_t t = a.reverse ? L - 1 - s : s;
      store16(DT + 16 * s, (dp ? load16(dp + t * a.delta.sl) : raw_delta16(dtlb + t * a.sdl, Wt, a.R)) + bias);
      store16(DTU + 16 * s, load16(up + t * a.u.sl));
    }
    if (a.softplus) {
#pragma omp simd
      for (int64_t i = 0; i < 16 * L; ++i) {
        const float dt = softplus_f(DT[i]);
        DT[i] = dt;
        DTU[i] *= dt;
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < 16 * L; ++i) DTU[i] *= DT[i];
    }
#endif
    v16f h[16] = {};
    for (int64_t s = 0; s < L; ++s) {
      const int64_t t = a.reverse ? L - 1 - s : s;
      const v16f dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s);
      const float* Bt = Bb + t * a.sBl;
      const float* Ct = Cb + t * a.sCl;
      if (nu) {
        __builtin_prefetch(nu + t * a.u.sl);
        __builtin_prefetch(no + t * out.sl, 1);
        if (nz) __builtin_prefetch(nz + t * a.z.sl);
      }
      // C_t·h_t in four running sums (state n into sum n mod 4): a 16-vector product array summed afterwards
      // kept 32 vectors live and spilled the states to the stack every step (the running sums take 0.95x its
      // time, docs/speed/2026-12-03b-intel/forward_fma_ab.txt). D u is added after the sum, as the reference
      // does: added first, VideoMamba's oracle logits were 1.5x as far from an fp64 run (docs/speed/2026-12-03e-avx2)
      v16f sum[4] = {};
#pragma GCC unroll 16
      for (int n = 0; n < 16; ++n) {
        h[n] = exp2_v16(load16(At2 + 16 * n) * dt) * h[n] + dtu * Bt[n];
        sum[n % 4] += h[n] * Ct[n];
      }
      const v16f y = ((sum[0] + sum[1]) + (sum[2] + sum[3])) + Dv * load16(up + t * a.u.sl);
      if (zp)
        store16(Y + 16 * s, y);
      else
        store16(op + t * out.sl, acc ? load16(op + t * out.sl) + y : y);
    }
    if (zp) {  // row_output's formula: (y + D u) silu(z)
#if DYVM_N16_AVX512
      for (int64_t s = 0; s < L; ++s) {
        const int64_t t = a.reverse ? L - 1 - s : s;
        float* ot = op + t * out.sl;
        v16f g = load16(Y + 16 * s) * silu_v16(load16(zp + t * a.z.sl));
        if (a.scale) g = g * a.scale[b];
        __asm__("" : "+v"(g));  // g rounded before the sum: no FMA, as the Python mixer adds stored outputs
        store16(ot, acc ? load16(ot) + g : g);
      }
#else
      for (int64_t s = 0; s < L; ++s) store16(DT + 16 * s, load16(zp + (a.reverse ? L - 1 - s : s) * a.z.sl));
      const float sc = a.scale ? a.scale[b] : 1.0f;
#pragma omp simd
      for (int64_t i = 0; i < 16 * L; ++i) {
        const float zv = DT[i];
        Y[i] = Y[i] * (zv * sigmoid_f(zv));
        if (a.scale) Y[i] = Y[i] * sc;
      }
      for (int64_t s = 0; s < L; ++s) {
        float* ot = op + (a.reverse ? L - 1 - s : s) * out.sl;
        store16(ot, acc ? load16(ot) + load16(Y + 16 * s) : load16(Y + 16 * s));
      }
#endif
    }
  }
}

// The backward with 16 channels in the vector lanes (instead of the 16 states of one channel): where every
// (B, E, L) tensor is channel-last (the mixer's layout; see scan_backward), a time step of 16 channels is one
// contiguous load or store, so nothing is gathered or transposed, and the sums over the state (C_t·h_t, the
// two sums of dΔ) become running vector sums instead of the ring-buffer reductions of backward_chunk_n16.
// The sums over channels that dB and dC need: each step's 8 vectors of a half are summed over their lanes at once
// (fold8, row_sums8) and added into dB and dC, with no per-image accumulators (their loads and stores and 2 KB a
// step of scratch; so the backward stays in L2 at 197 steps and beyond: docs/speed/2026-12-04-avx2; on AVX-512,
// where per-image (L, 16, 16) accumulators served until session 38, the fold makes the demo's Vim step 1.03x and
// Vim-T's 1.04x as fast, docs/speed/log.md "dt_proj inside the training scan"). With Args::dtl (the fused training
// branch) the raw Δ is dt_proj's product computed per step, and pass 3 sums dt_proj's two gradients in place of
// writing dΔ: dtw's per channel, dtl's over the lanes of per-image (L, R, 16) sums. Per block of 16 channels and
// image: pass 1 recomputes Δ, the states and decays and the gate's backward, and keeps the decays and the
// decayed states exp(Δ_t A) h_{t-1} (L + 1 and L rows of 256 floats); pass 2 runs the reverse recurrence in
// two halves of 8 states (the 16 recurrences over n are independent; 8 dh and 8 dA accumulators stay in
// registers) and rebuilds h_t from the decayed state with one FMA, as pass 1 computed it. The dA term takes
// the decayed state as kept: rebuilding it as h_t - Δu_t B_t instead cancels where the decay is strong (dA
// 1.2e-5 off the float64 reference there, 20x the other kernels' error). Pass 3 writes dΔ (or dt_proj's gradients)
// and du. Channels [d0, d1) (multiples of 16) of images [b0, b1); chunk: the slab of the (K, B, ...) partials it
// writes (as in backward_chunk_n16); dA, dD, dbias and ddtw are written (not added) for channels [d0, d1), summed
// over images [b0, b1). The same gradients up to float rounding (the sums run in another order), not bit-identical.
void backward_lanes16(const Args<float>& a, const Strided<float>& gout, const Grads<float>& g,
                      int64_t chunk, int64_t d0, int64_t d1, int64_t b0, int64_t b1) {
  const int64_t L = a.L, Bsz = a.batch, nblk = (d1 - d0) / 16;
  const size_t hs = 256 * L, es = 256 * (L + 1), per_s = 16 * L;
  const int64_t R = a.dtl ? a.R : 0;  // the fused branch: dt_proj's blocks, dtw's gradient and dtl's per image
  Scratch<float> sc(hs + es + 8 * per_s + 3 * nblk * 256 + 2 * nblk * 16 + 64 + 2 * nblk * 16 * R +
                    17 * L * R + (R ? nblk * per_s : 0));
  float* __restrict__ Hs = sc.base;            // Hs[256 s + 16 n + lane] = exp(Δ_s A_n) h_{s-1}[n]
  float* __restrict__ Es = Hs + hs;            // Es[256 s + 16 n + lane] = exp(Δ_s A_n); row L: zeros
  float* __restrict__ DT = Es + es;            // per scan step s, 16 lanes
  float* __restrict__ DTU = DT + per_s;
  float* __restrict__ SG = DTU + per_s;
  float* __restrict__ U = SG + per_s;
  float* __restrict__ DY = U + per_s;
  float* __restrict__ S1 = DY + per_s;
  float* __restrict__ S2 = S1 + per_s;
  float* __restrict__ At2 = S2 + 2 * per_s;    // per block [16 n + lane]: A[d][n] log2 e (lanes_A)
  float* __restrict__ At = At2 + nblk * 256;   // per block [16 n + lane]: A[d][n]
  float* __restrict__ dAacc = At + nblk * 256; // per block [16 n + lane]
  float* __restrict__ dDacc = dAacc + nblk * 256;
  float* __restrict__ dbacc = dDacc + nblk * 16;
  float* __restrict__ Wt = dbacc + nblk * 16;       // per block [16 r + lane]: dtw[d][r] (lanes_dtw)
  float* __restrict__ dWacc = Wt + nblk * 16 * R;   // per block [16 r + lane]: dtw's gradient
  float* __restrict__ accT = dWacc + nblk * 16 * R; // [16 (R t + r) + lane]: dtl[b, t, r]'s gradient terms
                                                    // (then L R floats: their sums, where g.srow spaces the rows)
  float* __restrict__ GDall = accT + 17 * L * R;    // the fused branch, per block [16 s + lane]: dΔ before dt_proj
  const int64_t sbc = g.srow ? g.srow : 16;         // dB's and dC's row stride
  std::fill(Es + 256 * L, Es + 256 * (L + 1), 0.0f);
  std::fill(dAacc, dAacc + nblk * 256 + 2 * nblk * 16, 0.0f);
  for (int64_t k = 0; k < nblk; ++k) lanes_A(a.A, d0 + 16 * k, At2 + 256 * k, At + 256 * k);
  for (int64_t k = 0; k < nblk && R; ++k) lanes_dtw(a.dtw, R, d0 + 16 * k, Wt + 16 * R * k);
  const bool sp = a.softplus;
  for (int64_t b = b0; b < b1; ++b) {
    float* dBp = g.dB + (chunk * Bsz + b) * L * sbc;  // image b's dB, dC: sums over the blocks
    float* dCp = g.dC + (chunk * Bsz + b) * L * sbc;
    for (int64_t t = 0; t < L; ++t) {
      std::fill(dBp + sbc * t, dBp + sbc * t + 16, 0.0f);
      std::fill(dCp + sbc * t, dCp + sbc * t + 16, 0.0f);
    }
    const float* Bb = a.Bm + b * a.sBb;
    const float* Cb = a.Cm + b * a.sCb;
    const float* dtlb = R ? a.dtl + b * a.sdb : nullptr;
    for (int64_t k = 0; k < nblk; ++k) {
      const int64_t e0 = d0 + 16 * k;
      const float* __restrict__ Wtk = Wt + 16 * R * k;
      const float* __restrict__ At2k = At2 + 256 * k;
      const float* __restrict__ Atk = At + 256 * k;
      const v16f bias = a.bias ? load16(a.bias + e0) : v16f{};
      const v16f Dv = a.D ? load16(a.D + e0) : v16f{};
      const float* up = a.u.p + b * a.u.sb + e0;
      const float* dp = R ? nullptr : a.delta.p + b * a.delta.sb + e0;
      const float* zp = a.z.p ? a.z.p + b * a.z.sb + e0 : nullptr;
      const float* gp = gout.p + b * gout.sb + e0;
      // The next block's rows (this image's, or the next image's first block's), fetched into cache during pass 2,
      // whose arithmetic hides the misses: each block reads one cache line per step of u, grad_out and z and writes
      // one of dz (adding into it for the second direction) and du, strided by the tensors' rows, so pass 1, the
      // gate's stores and pass 3 otherwise waited on memory (docs/speed/log.md "Prefetched rows in the training
      // kernels")
      const int64_t nb = k + 1 < nblk ? b : b + 1, ne0 = k + 1 < nblk ? e0 + 16 : d0;
      const bool next = nb < b1;
      const float* nu = next ? a.u.p + nb * a.u.sb + ne0 : nullptr;
      const float* ng = next ? gout.p + nb * gout.sb + ne0 : nullptr;
      const float* nz = next && zp ? a.z.p + nb * a.z.sb + ne0 : nullptr;
      const float* ndz = next && zp ? g.dz.p + nb * g.dz.sb + ne0 : nullptr;
      float* dub = g.du.p + b * g.du.sb + e0;
      // pass 1 (scan order): Δ, the states and decays, the gate's backward. The per-step inputs are first
      // copied into (L, 16) buffers, so Δ = softplus(...) and the gate run as long vector loops
      float* __restrict__ Z = S2 + per_s;  // z, then dz
      for (int64_t s = 0; s < L; ++s) {
        const int64_t t = a.reverse ? L - 1 - s : s;
        const v16f raw = dp ? load16(dp + t * a.delta.sl) : raw_delta16(dtlb + t * a.sdl, Wtk, R);
        store16(SG + 16 * s, raw + bias);  // the raw Δ, until the loop below
        store16(U + 16 * s, load16(up + t * a.u.sl));
        store16(DY + 16 * s, load16(gp + t * gout.sl));          // grad_out, until the gate's loop
        if (zp) store16(Z + 16 * s, load16(zp + t * a.z.sl));
      }
      if (sp) {
#if DYVM_N16_AVX512
        for (int64_t i = 0; i < 16 * L; i += 16) {
          v16f dt, sg;
          softplus_sigmoid_v16(load16(SG + i), dt, sg);
          store16(DT + i, dt);
          store16(SG + i, sg);
          store16(DTU + i, dt * load16(U + i));
        }
#else
#pragma omp simd
        for (int64_t i = 0; i < 16 * L; ++i) {
          float dt, sg;
          softplus_sigmoid_f(SG[i], dt, sg);
          DT[i] = dt;
          SG[i] = sg;
          DTU[i] = dt * U[i];
        }
#endif
      } else {
#pragma omp simd
        for (int64_t i = 0; i < 16 * L; ++i) {
          DT[i] = SG[i];
          DTU[i] = SG[i] * U[i];
        }
      }
      float* __restrict__ Y = S1;  // C_t·h_t + D u_t for the gate (S1 is reset before pass 2)
      for (int half = 0; half < 2; ++half) {  // 8 states at a time: their states stay in registers
        v16f h[8] = {};
        for (int64_t s = 0; s < L; ++s) {
          const int64_t t = a.reverse ? L - 1 - s : s;
          const v16f dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s);
          const float* Bt = Bb + t * a.sBl + 8 * half;
          const float* Ct = Cb + t * a.sCl + 8 * half;
          v16f y = half ? load16(Y + 16 * s) : v16f{};  // D u added after the sum over the states
#pragma GCC unroll 8
          for (int m = 0; m < 8; ++m) {
            const int n = 8 * half + m;
            const v16f e = exp2_v16(load16(At2k + 16 * n) * dt);
            const v16f decayed = e * h[m];
            h[m] = decayed + dtu * Bt[m];
            store16(Es + 256 * s + 16 * n, e);
            store16(Hs + 256 * s + 16 * n, decayed);
            y = y + h[m] * Ct[m];
          }
          if (half) y = y + Dv * load16(U + 16 * s);
          if (zp) store16(Y + 16 * s, y);
        }
      }
      if (zp) {  // row_gate_backward's formulas: dy = g silu(z), dz = g (y + D u) silu'(z)
        // with a scale s: g = s grad_out, and s's gradient gains Σ grad_out (y + D u) silu(z) over these steps
        const float sc = a.scale ? a.scale[b] : 1.0f;
        float dsc = 0.0f;
#if DYVM_N16_AVX512
        v16f dsv = {};
        for (int64_t i = 0; i < 16 * L; i += 16) {
          const v16f zi = load16(Z + i), go = load16(DY + i), yi = load16(Y + i);
          const v16f sz = sigmoid_v16(zi);
          const v16f gi = a.scale ? go * sc : go;
          if (a.scale) dsv += go * (yi * (zi * sz));
          store16(DY + i, gi * zi * sz);
          store16(Z + i, gi * yi * sz * (1.0f + zi * (1.0f - sz)));
        }
        if (a.scale) {
          alignas(64) float lanes[16];
          store16(lanes, dsv);
          for (int j = 0; j < 16; ++j) dsc += lanes[j];
        }
#else
#pragma omp simd reduction(+ : dsc)
        for (int64_t i = 0; i < 16 * L; ++i) {
          const float zi = Z[i], go = DY[i], sz = sigmoid_f(zi);
          const float gi = go * sc;
          dsc += go * (Y[i] * (zi * sz));
          DY[i] = gi * zi * sz;
          Z[i] = gi * Y[i] * sz * (1.0f + zi * (1.0f - sz));
        }
#endif
        if (a.scale) g.dscale[chunk * Bsz + b] += dsc;
        for (int64_t s = 0; s < L; ++s) {
          float* dzt = g.dz.p + b * g.dz.sb + e0 + (a.reverse ? L - 1 - s : s) * g.dz.sl;
          store16(dzt, g.dz_accumulate ? load16(dzt) + load16(Z + 16 * s) : load16(Z + 16 * s));
        }
      }
      // pass 2 (reverse scan order), the 16 states in two halves of 8 independent recurrences
      std::fill(S1, S1 + 2 * per_s, 0.0f);
      for (int half = 0; half < 2; ++half) {
        v16f dh[8] = {}, dA[8];
        for (int m = 0; m < 8; ++m) dA[m] = load16(dAacc + 256 * k + 16 * (8 * half + m));
        for (int64_t s = L - 1; s >= 0; --s) {
          const int64_t t = a.reverse ? L - 1 - s : s;
          const v16f dy = load16(DY + 16 * s), dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s);
          const float* Bt = Bb + t * a.sBl;
          const float* Ct = Cb + t * a.sCl;
          if (half == 0) {
            if (nu) {
              __builtin_prefetch(nu + t * a.u.sl);
              __builtin_prefetch(ng + t * gout.sl);
            }
            if (nz) __builtin_prefetch(nz + t * a.z.sl);
          } else {
            __builtin_prefetch(dub + t * g.du.sl, 1);
            if (ndz) __builtin_prefetch(ndz + t * g.dz.sl, 1);
          }
          v16f s1 = {}, s2 = {};
          __m256 qb[8], qc[8];  // this step's dB, dC terms of the 8 states, folded to 8 lanes
#pragma GCC unroll 8
          for (int m = 0; m < 8; ++m) {
            const int n = 8 * half + m;
            const v16f e_next = load16(Es + 256 * (s + 1) + 16 * n);  // row L: zeros
            dh[m] = e_next * dh[m] + dy * Ct[n];
            const v16f decayed = load16(Hs + 256 * s + 16 * n);       // exp(Δ_t A) h_{t-1}
            const v16f h = decayed + dtu * Bt[n];                     // h_t, as pass 1 computed it
            const v16f x = dh[m] * decayed;
            dA[m] = dA[m] + x * dt;
            s1 = s1 + x * load16(Atk + 16 * n);
            s2 = s2 + dh[m] * Bt[n];
            qb[m] = fold8(dh[m] * dtu);
            qc[m] = fold8(h * dy);
          }
          float* db = dBp + sbc * t + 8 * half;
          float* dc = dCp + sbc * t + 8 * half;
          _mm256_storeu_ps(db, _mm256_add_ps(_mm256_loadu_ps(db), row_sums8(qb)));
          _mm256_storeu_ps(dc, _mm256_add_ps(_mm256_loadu_ps(dc), row_sums8(qc)));
          store16(S1 + 16 * s, load16(S1 + 16 * s) + s1);
          store16(S2 + 16 * s, load16(S2 + 16 * s) + s2);
        }
        for (int m = 0; m < 8; ++m) store16(dAacc + 256 * k + 16 * (8 * half + m), dA[m]);
      }
      // pass 3: dΔ, du, and the sums of dD and dbias
      v16f dD = load16(dDacc + 16 * k), db = load16(dbacc + 16 * k);
      float* __restrict__ GD = GDall + per_s * k;  // the fused branch
      for (int64_t s = 0; s < L; ++s) {
        const int64_t t = a.reverse ? L - 1 - s : s;
        const v16f s1 = load16(S1 + 16 * s), s2 = load16(S2 + 16 * s);
        const v16f uv = load16(U + 16 * s), dy = load16(DY + 16 * s);
        v16f gd = s1 + uv * s2;
        if (sp) gd = gd * load16(SG + 16 * s);
        if (R) {  // dt_proj's backward: dtw's gradient after this loop, dtl's after the image's last block
          store16(GD + 16 * s, gd);
        } else {
          store16(g.ddelta.p + b * g.ddelta.sb + e0 + t * g.ddelta.sl, gd);
        }
        store16(dub + t * g.du.sl, load16(DT + 16 * s) * s2 + Dv * dy);
        dD = dD + dy * uv;
        db = db + gd;
      }
      store16(dDacc + 16 * k, dD);
      store16(dbacc + 16 * k, db);
      // dtw's gradient per channel, Σ_t dΔ_t dtl[t, r], in registers 8 columns at a time, from the stored dΔ
      for (int64_t r0 = 0; r0 < R; r0 += 8) {
        const int64_t nr = std::min<int64_t>(8, R - r0);
        v16f acc[8] = {};
        for (int64_t s = 0; s < L; ++s) {
          const float* dtr = dtlb + (a.reverse ? L - 1 - s : s) * a.sdl + r0;
          const v16f gd = load16(GD + 16 * s);
#pragma GCC unroll 8
          for (int j = 0; j < 8; ++j)
            if (j < nr) acc[j] += gd * dtr[j];
        }
        float* dW = dWacc + 16 * R * k + 16 * r0;
        for (int j = 0; j < nr; ++j) store16(dW + 16 * j, load16(dW + 16 * j) + acc[j]);
      }
    }
    if (R) {  // dtl's gradient of image b from this chunk's channels, Σ_e dΔ[t, e] dtw[e, r]: the blocks' terms
      // summed in registers once the image's blocks are done (added into accT block by block in pass 3, those
      // read-modify-writes took 8% of this kernel's samples), then the lane sums of accT's L R rows
      for (int64_t s = 0; s < L; ++s) {
        float* at = accT + 16 * R * (a.reverse ? L - 1 - s : s);
        for (int64_t r = 0; r < R; ++r) {
          v16f v = {};
          for (int64_t k = 0; k < nblk; ++k)
            v += load16(GDall + per_s * k + 16 * s) * load16(Wt + 16 * R * k + 16 * r);
          store16(at + 16 * r, v);
        }
      }
      const int64_t sdt = g.srow ? g.srow : R;
      float* dst = g.ddtl + (chunk * Bsz + b) * L * sdt;
      float* sums = sdt == R ? dst : accT + 16 * L * R;  // strided rows: summed into scratch, then copied
      int64_t i = 0;
      for (; i + 16 <= L * R; i += 16) store16(sums + i, row_sums16(accT + 16 * i));
      for (; i < L * R; ++i) {
        float sum = 0.0f;
        for (int j = 0; j < 16; ++j) sum += accT[16 * i + j];
        sums[i] = sum;
      }
      if (sums != dst)
        for (int64_t t = 0; t < L; ++t) std::copy(sums + R * t, sums + R * (t + 1), dst + sdt * t);
    }
  }
  for (int64_t k = 0; k < nblk; ++k)
    for (int j = 0; j < 16; ++j) {
      const int64_t d = d0 + 16 * k + j;
      for (int64_t r = 0; r < R; ++r) g.ddtw[d * R + r] = dWacc[16 * R * k + 16 * r + j];
      for (int n = 0; n < 16; ++n) g.dA[d * 16 + n] = dAacc[256 * k + 16 * n + j];
      if (g.dD) g.dD[d] = dDacc[16 * k + j];
      if (g.dbias) g.dbias[d] = dbacc[16 * k + j];
    }
}

#endif  // DYVM_HAVE_N16

// the fast path where it applies, else the generic one
template <typename T>
void forward_dispatch(const Args<T>& a, const StridedOut<T>& out, int64_t r0, int64_t r1, bool /*lanes*/) {
  forward_rows<T>(a, out, r0, r1);
}
template <typename T>
void backward_dispatch(const Args<T>& a, const Strided<T>& gout, const Grads<T>& g, int64_t chunk,
                       int64_t d0, int64_t d1, bool /*lanes*/) {
  backward_chunk<T>(a, gout, g, chunk, d0, d1);
}
#if DYVM_HAVE_N16
template <>
void forward_dispatch<float>(const Args<float>& a, const StridedOut<float>& out, int64_t r0, int64_t r1,
                             bool lanes) {
#if DYVM_LANES
  if (lanes) return forward_lanes16(a, out, r0, r1);  // r0, r1 count (image, block of 16 channels) units
#endif
  if (a.N == 16) return forward_rows_n16(a, out, r0, r1);
  forward_rows<float>(a, out, r0, r1);
}
template <>
void backward_dispatch<float>(const Args<float>& a, const Strided<float>& gout, const Grads<float>& g,
                              int64_t chunk, int64_t d0, int64_t d1, bool lanes) {
#if DYVM_LANES
  if (lanes) return backward_lanes16(a, gout, g, chunk, d0, d1, 0, a.batch);
#endif
  if (a.N == 16) return backward_chunk_n16(a, gout, g, chunk, d0, d1);
  backward_chunk<float>(a, gout, g, chunk, d0, d1);
}
#endif

// ---------------------------------------------------------------------------------------
// Depthwise causal conv1d + bias + SiLU (Mamba's short convolution): forward and backward.
//
//   pre[b,e,t] = bias[e] + sum_k w[e,k] xm[b,e,t-(K-1)+k]   (xm = 0 before t = 0)
//   out[b,e,t] = m[b,t] silu(pre[b,e,t])  (or pre),     xm = m[b,t] x[b,e,t]
//
// with an optional 0/1 token mask m (B, L) (DyVM's training mask: applied before the conv
// and after it, since the bias would make masked slots non-zero); with `reverse` the conv
// runs over the reversed sequence (anti-causal), as the backward branch of the mixer needs.
// x, m, grad_out and the outputs are read and written through their strides (the mixer
// uses channel-last (B, L, E) memory viewed as (B, E, L)); w is (E, K).
// Rows are gathered (16 channels at a time), in scan order, into zero-padded scratch rows
// (K-1 zeros, then xm), so every tap is a unit-stride, vectorised loop; K = 4 is unrolled.
// Backward, with g = m dout silu'(pre) (pre recomputed), in scan order:
//   dx[s] = m sum_k w[k] g[s+K-1-k]  (g = 0 past L),  dw[k] = sum_{b,s} g[s] xp[s+k],
//   dbias = sum_{b,s} g[s].
// The forward splits rows over threads; the backward splits channels: a chunk owns dw and
// dbias of its channels and sums them over b in order (per-row sums in T, the running sum
// in double), so the result does not depend on the number of threads or on scheduling.
// ---------------------------------------------------------------------------------------

template <typename T>
struct ConvArgs {
  const T* x;              // (B, E, L), any strides
  int64_t sb, se, sl;      // strides of x, in elements
  const T* m;              // (B, L) mask or null
  int64_t msb, msl;
  const T* w;              // (E, K) contiguous
  const T* bias;           // (E) or null
  int64_t batch, E, L, K;
  bool silu, reverse;
  const int64_t* rows = nullptr;  // conv_forward_cl16: image i reads x's image rows[i] (null: image i)
};

constexpr int64_t kConvBlock = 16;

// ms[s] = m[b, t(s)]; returns ms, or null without a mask
template <typename T>
DYVM_INLINE const T* conv_mask_row(const ConvArgs<T>& a, int64_t b, T* __restrict__ ms) {
  if (!a.m) return nullptr;
  const T* __restrict__ p = a.m + b * a.msb;
  for (int64_t s = 0; s < a.L; ++s) ms[s] = p[(a.reverse ? a.L - 1 - s : s) * a.msl];
  return ms;
}

// Rows (b, e0 .. e0+nb) of xm into nb zero-padded scratch rows of ld elements:
// xp[j ld + k] = 0 for k < K-1, xp[j ld + K-1 + s] = xm[b, e0+j, t(s)].
template <typename T>
DYVM_INLINE void conv_gather(const ConvArgs<T>& a, int64_t b, int64_t e0, int64_t nb,
                             const T* ms, T* __restrict__ xp, int64_t ld) {
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t k = 0; k < a.K - 1; ++k) xp[j * ld + k] = T(0);
  gather_block(a.x, a.sb, a.se, a.sl, b, e0, nb, a.L, a.reverse, ms, xp, ld, a.K - 1);
}

// pre[t] = bias + sum_k w[k] xp[t+k], t < L
template <typename T>
DYVM_INLINE void conv_row_pre(const T* __restrict__ xp, const T* __restrict__ w, T bias,
                              int64_t L, int64_t K, T* __restrict__ pre) {
  if (K == 4) {
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
#pragma omp simd
    for (int64_t t = 0; t < L; ++t)
      pre[t] = bias + w0 * xp[t] + w1 * xp[t + 1] + w2 * xp[t + 2] + w3 * xp[t + 3];
  } else {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) pre[t] = bias;
    for (int64_t k = 0; k < K; ++k) {
      const T wk = w[k];
      const T* __restrict__ xk = xp + k;
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) pre[t] += wk * xk[t];
    }
  }
}

template <typename T>
void conv_forward_rows(const ConvArgs<T>& a, const StridedOut<T>& out, int64_t r0, int64_t r1) {
  const int64_t L = a.L, K = a.K, E = a.E, ld = L + K;
  Scratch<T> s(2 * kConvBlock * ld + L);
  T* __restrict__ os = s.base + kConvBlock * ld;
  T* __restrict__ msb = os + kConvBlock * ld;
  int64_t mask_b = -1;
  const T* ms = nullptr;
  for (int64_t row0 = r0; row0 < r1;) {
    const int64_t b = row0 / E, e0 = row0 % E;
    const int64_t nb = std::min(std::min(kConvBlock, r1 - row0), E - e0);  // one b per block
    if (b != mask_b) {
      ms = conv_mask_row(a, b, msb);
      mask_b = b;
    }
    conv_gather(a, b, e0, nb, ms, s.base, ld);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t e = e0 + j;
      T* __restrict__ o = os + j * ld;
      conv_row_pre(s.base + j * ld, a.w + e * K, a.bias ? a.bias[e] : T(0), L, K, o);
      if (a.silu) {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) {
          const T v = o[t];
          o[t] = v * sigmoid_f(v);
        }
      }
      if (ms) {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) o[t] *= ms[t];
      }
    }
    scatter_block(out.p, out.sb, out.se, out.sl, b, e0, nb, L, a.reverse, os, ld);
    row0 += nb;
  }
}

template <typename T>
void conv_backward_chunk(const ConvArgs<T>& a, const Strided<T>& gout, const StridedOut<T>& dx,
                         T* __restrict__ dw, T* __restrict__ dbias, T* __restrict__ dmask,
                         int64_t d0, int64_t d1) {
  // dmask (B, L) of this chunk, or null: d/dm of m act(pre(m x)) = sum_e dout act(pre) + x dxm
  const int64_t L = a.L, K = a.K, nd = d1 - d0;
  const int64_t ld = L + K;
  Scratch<T> s((4 * kConvBlock + 2) * ld + 2 * L);
  T* __restrict__ gos = s.base + kConvBlock * ld;   // grad_out rows, scan order
  T* __restrict__ dxs = gos + kConvBlock * ld;      // dx rows (before the mask), scan order
  T* __restrict__ xr = dxs + kConvBlock * ld;       // raw x rows (for dmask)
  T* __restrict__ gp = xr + kConvBlock * ld;        // g[0..L), then K-1 zeros
  T* __restrict__ pre = gp + ld;
  T* __restrict__ msb = pre + ld;
  T* __restrict__ dms = msb + L;                    // dmask of one image, scan order
  std::vector<double> acc_w(static_cast<size_t>(nd * K), 0.0), acc_b(static_cast<size_t>(nd), 0.0);
  for (int64_t t = L; t < L + K - 1; ++t) gp[t] = T(0);
  for (int64_t b = 0; b < a.batch; ++b) {
    const T* ms = conv_mask_row(a, b, msb);
    if (dmask) std::fill(dms, dms + L, T(0));
    for (int64_t e0 = d0; e0 < d1; e0 += kConvBlock) {
      const int64_t nb = std::min(kConvBlock, d1 - e0);
      conv_gather(a, b, e0, nb, ms, s.base, ld);
      gather_block(gout.p, gout.sb, gout.se, gout.sl, b, e0, nb, L, a.reverse, static_cast<const T*>(nullptr),
                   gos, ld, 0);
      if (dmask)
        gather_block(a.x, a.sb, a.se, a.sl, b, e0, nb, L, a.reverse, static_cast<const T*>(nullptr), xr, ld, 0);
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t e = e0 + j;
        T* __restrict__ xp = s.base + j * ld;
        const T* __restrict__ w = a.w + e * K;
        const T* __restrict__ go = gos + j * ld;
        if (a.silu || dmask) conv_row_pre(xp, w, a.bias ? a.bias[e] : T(0), L, K, pre);
        if (a.silu) {
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) {
            const T v = pre[t];
            const T sg = sigmoid_f(v);
            const T gm = ms ? go[t] * ms[t] : go[t];
            gp[t] = gm * sg * (T(1) + v * (T(1) - sg));
          }
          if (dmask) {
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) dms[t] += go[t] * pre[t] * sigmoid_f(pre[t]);
          }
        } else {
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) gp[t] = ms ? go[t] * ms[t] : go[t];
          if (dmask) {
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) dms[t] += go[t] * pre[t];
          }
        }
        T sb = T(0);
#pragma omp simd reduction(+ : sb)
        for (int64_t t = 0; t < L; ++t) sb += gp[t];
        acc_b[e - d0] += static_cast<double>(sb);
        for (int64_t k = 0; k < K; ++k) {
          const T* __restrict__ xk = xp + k;
          T sw = T(0);
#pragma omp simd reduction(+ : sw)
          for (int64_t t = 0; t < L; ++t) sw += gp[t] * xk[t];
          acc_w[(e - d0) * K + k] += static_cast<double>(sw);
        }
        T* __restrict__ dxr = dxs + j * ld;
        if (K == 4) {
          const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
#pragma omp simd
          for (int64_t t = 0; t < L; ++t)
            dxr[t] = w3 * gp[t] + w2 * gp[t + 1] + w1 * gp[t + 2] + w0 * gp[t + 3];
        } else {
          const T wl = w[K - 1];
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) dxr[t] = wl * gp[t];
          for (int64_t jj = 1; jj < K; ++jj) {  // tap k = K-1-jj reads g[t + jj]
            const T wk = w[K - 1 - jj];
            const T* __restrict__ gj = gp + jj;
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) dxr[t] += wk * gj[t];
          }
        }
        if (dmask) {
          const T* __restrict__ xrr = xr + j * ld;
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) dms[t] += xrr[t] * dxr[t];
        }
        if (ms) {
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) dxr[t] *= ms[t];
        }
      }
      scatter_block(dx.p, dx.sb, dx.se, dx.sl, b, e0, nb, L, a.reverse, dxs, ld);
    }
    if (dmask) {
      T* __restrict__ dm = dmask + b * L;
      for (int64_t s2 = 0; s2 < L; ++s2) dm[a.reverse ? L - 1 - s2 : s2] = dms[s2];
    }
  }
  for (int64_t e = d0; e < d1; ++e) {
    for (int64_t k = 0; k < K; ++k) dw[e * K + k] = static_cast<T>(acc_w[(e - d0) * K + k]);
    if (dbias) dbias[e] = static_cast<T>(acc_b[e - d0]);
  }
}


// Channel-last fast path: x, grad_out and the outputs with unit channel stride (the mixer's layout:
// (B, L, E) memory viewed as (B, E, L)). Rows of E contiguous channels are combined over time directly,
// vectorised over channels, without the gather/scatter transposes of the generic path. Same formulas and
// tap order; tap k reads time t - dir (K-1-k), dir = 1 (causal) or -1 (reverse). wt: the taps as (K, E).
// pre[e] = bias[d0+e] + sum_k w[k][d0+e] xm[b, t - dir (K-1-k), d0+e] for e < nd (x channel-last; taps past
// either end read the zero padding)
template <typename T>
DYVM_INLINE void conv_pre_cl(const ConvArgs<T>& a, const T* __restrict__ wt, int64_t b, int64_t t, int64_t d0,
                             int64_t nd, T* __restrict__ pre) {
  const int64_t L = a.L, K = a.K, E = a.E, dir = a.reverse ? -1 : 1;
  if (a.bias) {
#pragma omp simd
    for (int64_t e = 0; e < nd; ++e) pre[e] = a.bias[d0 + e];
  } else {
    std::fill(pre, pre + nd, T(0));
  }
  for (int64_t k = 0; k < K; ++k) {
    const int64_t tt = t - dir * (K - 1 - k);
    if (tt < 0 || tt >= L) continue;
    const T mk = a.m ? a.m[b * a.msb + tt * a.msl] : T(1);
    const T* __restrict__ xr = a.x + b * a.sb + tt * a.sl + d0;
    const T* __restrict__ wk = wt + k * E + d0;
#pragma omp simd
    for (int64_t e = 0; e < nd; ++e) pre[e] += wk[e] * (xr[e] * mk);
  }
}

template <typename T>
void conv_forward_cl(const ConvArgs<T>& a, const StridedOut<T>& o, const T* __restrict__ wt,
                     int64_t r0, int64_t r1) {
  const int64_t L = a.L, E = a.E;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / L, t = r % L;
    T* __restrict__ out = o.p + b * o.sb + t * o.sl;
    conv_pre_cl(a, wt, b, t, 0, E, out);
    if (a.silu) {
#pragma omp simd
      for (int64_t e = 0; e < E; ++e) {
        const T v = out[e];
        out[e] = v * sigmoid_f(v);
      }
    }
    if (a.m) {
      const T mt = a.m[b * a.msb + t * a.msl];
#pragma omp simd
      for (int64_t e = 0; e < E; ++e) out[e] *= mt;
    }
  }
}

// Backward of one chunk of channels [d0, d1) over every image (the chunk owns dw and dbias of its
// channels, accumulated per image in T and across images in double, in a fixed order), channel-last.
// g[t] = m[t] dout[t] act'(pre[t]) is kept for the whole sequence (rows 0..K-2 and past L are zero),
// then dx[t] = m[t] sum_j w[K-1-j] g[t + dir j].
template <typename T>
void conv_backward_cl_chunk(const ConvArgs<T>& a, const Strided<T>& gout, const StridedOut<T>& dx,
                            const T* __restrict__ wt, T* __restrict__ dw, T* __restrict__ dbias,
                            T* __restrict__ dmask, int64_t d0, int64_t d1) {
  const int64_t L = a.L, K = a.K, E = a.E, nd = d1 - d0, dir = a.reverse ? -1 : 1, pad = K - 1;
  const int64_t rows = L + 2 * pad;
  const bool go_cl = gout.se == 1;  // else each image's grad_out block is transposed into gob first
  Scratch<T> s(static_cast<size_t>(rows * nd + (K + 2) * nd + L + (go_cl ? 0 : L * nd)));
  T* __restrict__ G = s.base;                      // g rows, time order, row t at pad + t
  T* __restrict__ pre = G + rows * nd;             // one row of pre-activations
  T* __restrict__ sw = pre + nd;                   // (K, nd) per-image dw sums
  T* __restrict__ sbias = sw + K * nd;             // per-image dbias sums
  T* __restrict__ dms = sbias + nd;                // dmask of one image, time order
  T* __restrict__ gob = dms + L;                   // grad_out of one image, (L, nd), when not channel-last
  std::fill(G, G + rows * nd, T(0));
  std::vector<double> acc_w(static_cast<size_t>(nd * K), 0.0), acc_b(static_cast<size_t>(nd), 0.0);
  for (int64_t b = 0; b < a.batch; ++b) {
    std::fill(sw, sw + (K + 1) * nd, T(0));
    if (dmask) std::fill(dms, dms + L, T(0));
    if (!go_cl)
      for (int64_t e = 0; e < nd; ++e) {
        const T* __restrict__ src = gout.p + b * gout.sb + (d0 + e) * gout.se;
        for (int64_t t = 0; t < L; ++t) gob[t * nd + e] = src[t * gout.sl];
      }
    for (int64_t t = 0; t < L; ++t) {
      const T mt = a.m ? a.m[b * a.msb + t * a.msl] : T(1);
      const T* __restrict__ go = go_cl ? gout.p + b * gout.sb + t * gout.sl + d0 : gob + t * nd;
      T* __restrict__ g = G + (pad + t) * nd;
      if (a.silu || dmask) conv_pre_cl(a, wt, b, t, d0, nd, pre);
      T dm = T(0);
      if (a.silu) {
#pragma omp simd reduction(+ : dm)
        for (int64_t e = 0; e < nd; ++e) {
          const T v = pre[e];
          const T sg = sigmoid_f(v);
          g[e] = (go[e] * mt) * sg * (T(1) + v * (T(1) - sg));
          dm += go[e] * v * sg;
        }
      } else {
#pragma omp simd reduction(+ : dm)
        for (int64_t e = 0; e < nd; ++e) {
          g[e] = go[e] * mt;
          dm += go[e] * pre[e];
        }
      }
      if (dmask) dms[t] += dm;
#pragma omp simd
      for (int64_t e = 0; e < nd; ++e) sbias[e] += g[e];
      for (int64_t k = 0; k < K; ++k) {  // dw[k] += g[t] xm[t - dir (K-1-k)]
        const int64_t tt = t - dir * (K - 1 - k);
        if (tt < 0 || tt >= L) continue;
        const T mk = a.m ? a.m[b * a.msb + tt * a.msl] : T(1);
        const T* __restrict__ xr = a.x + b * a.sb + tt * a.sl + d0;
        T* __restrict__ swk = sw + k * nd;
#pragma omp simd
        for (int64_t e = 0; e < nd; ++e) swk[e] += g[e] * (xr[e] * mk);
      }
    }
    for (int64_t t = 0; t < L; ++t) {
      T* __restrict__ o = dx.p + b * dx.sb + t * dx.sl + d0;
      const T* __restrict__ g0 = G + (pad + t) * nd;
      const T* __restrict__ wl = wt + (K - 1) * E + d0;
#pragma omp simd
      for (int64_t e = 0; e < nd; ++e) o[e] = wl[e] * g0[e];
      for (int64_t j = 1; j < K; ++j) {
        const T* __restrict__ gj = G + (pad + t + dir * j) * nd;
        const T* __restrict__ wk = wt + (K - 1 - j) * E + d0;
#pragma omp simd
        for (int64_t e = 0; e < nd; ++e) o[e] += wk[e] * gj[e];
      }
      const T mt = a.m ? a.m[b * a.msb + t * a.msl] : T(1);
      if (dmask) {
        const T* __restrict__ xr = a.x + b * a.sb + t * a.sl + d0;
        T dm = T(0);
#pragma omp simd reduction(+ : dm)
        for (int64_t e = 0; e < nd; ++e) dm += xr[e] * o[e];
        dms[t] += dm;
      }
      if (a.m) {
#pragma omp simd
        for (int64_t e = 0; e < nd; ++e) o[e] *= mt;
      }
    }
    for (int64_t e = 0; e < nd; ++e) {
      acc_b[e] += static_cast<double>(sbias[e]);
      for (int64_t k = 0; k < K; ++k) acc_w[e * K + k] += static_cast<double>(sw[k * nd + e]);
    }
    if (dmask) std::copy(dms, dms + L, dmask + b * L);
  }
  for (int64_t e = 0; e < nd; ++e) {
    for (int64_t k = 0; k < K; ++k) dw[(d0 + e) * K + k] = static_cast<T>(acc_w[e * K + k]);
    if (dbias) dbias[d0 + e] = static_cast<T>(acc_b[e]);
  }
}

#if DYVM_HAVE_N16
// Channel-last float conv with K = 4 taps and no mask, in blocks of 16 channels (the mixer's training case):
// a block of one image is one pass over its sequence with everything in vector registers: the last four
// inputs, the taps, and in the backward the four dw sums, the dbias sum and the three later g values that
// dx[s] needs (the pass runs in reverse scan order). The generic channel-last kernels above run each tap
// as a loop over the chunk's channels (4 vectors each when two threads split 128 channels), whose loop
// overhead dominated. Same formulas and tap order as conv_pre_cl and conv_backward_cl_chunk; the
// per-image dw and dbias sums run over time in reverse scan order (float per image, double across images).
// (templates: the float specialisations below are the kernels; other types never take them)
template <typename T>
DYVM_INLINE bool conv_cl16_applies(const ConvArgs<T>&) { return false; }
template <typename T>
void conv_forward_cl16(const ConvArgs<T>&, const StridedOut<T>&, const T*, int64_t, int64_t) {}
template <typename T>
void conv_backward_cl16_chunk(const ConvArgs<T>&, const Strided<T>&, const StridedOut<T>&, const T*, T*, T*,
                              int64_t, int64_t, bool) {}

template <>
DYVM_INLINE bool conv_cl16_applies<float>(const ConvArgs<float>& a) {
  return a.K == 4 && !a.m && a.se == 1 && a.E % 16 == 0;
}

// bias + w0 x3 + w1 x2 + w2 x1 + w3 x0 in conv_pre_cl's order (x3: the input 3 scan steps back, x0: this step's);
// the forward and the backward's recomputation both use it
DYVM_INLINE v16f conv_pre16(v16f bias, v16f w0, v16f w1, v16f w2, v16f w3, v16f x3, v16f x2, v16f x1, v16f x0) {
  v16f pre = bias + w0 * x3;
  pre = pre + w1 * x2;
  pre = pre + w2 * x1;
  return pre + w3 * x0;
}

// Units [k0, k1) of (image, block of 16 channels).
template <>
void conv_forward_cl16<float>(const ConvArgs<float>& a, const StridedOut<float>& o, const float* __restrict__ wt,
                              int64_t k0, int64_t k1) {
  const int64_t L = a.L, E = a.E, nblk = E / 16;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t b = k / nblk, e0 = (k % nblk) * 16;
    const v16f w0 = load16(wt + e0), w1 = load16(wt + E + e0), w2 = load16(wt + 2 * E + e0),
               w3 = load16(wt + 3 * E + e0);
    const v16f bias = a.bias ? load16(a.bias + e0) : v16f{};
    const float* xb = a.x + (a.rows ? a.rows[b] : b) * a.sb + e0;
    float* ob = o.p + b * o.sb + e0;
    // the next unit's rows, fetched during this one (one cache line per step, strided by the rows)
    const bool next = k + 1 < k1;
    const int64_t nb = (k + 1) / nblk, ne0 = ((k + 1) % nblk) * 16;
    const float* nx = next ? a.x + (a.rows ? a.rows[nb] : nb) * a.sb + ne0 : nullptr;
    const float* no = next ? o.p + nb * o.sb + ne0 : nullptr;
    v16f x3 = {}, x2 = {}, x1 = {};  // inputs at scan steps s-3, s-2, s-1 (zero before the start)
    for (int64_t s = 0; s < L; ++s) {
      const int64_t t = a.reverse ? L - 1 - s : s;
      if (nx) {
        __builtin_prefetch(nx + t * a.sl);
        __builtin_prefetch(no + t * o.sl, 1);
      }
      const v16f x0 = load16(xb + t * a.sl);
      v16f pre = conv_pre16(bias, w0, w1, w2, w3, x3, x2, x1, x0);
      if (a.silu) pre = pre * map16(pre, [](float v) { return sigmoid_f(v); });
      store16(ob + t * o.sl, pre);
      x3 = x2;
      x2 = x1;
      x1 = x0;
    }
  }
}

// Channels [d0, d1) (multiples of 16) of every image; grad_out and dx channel-last. accumulate: dx is added to
// what is there (the other SSM direction's, in the training mixer's node).
template <>
void conv_backward_cl16_chunk<float>(const ConvArgs<float>& a, const Strided<float>& gout,
                                     const StridedOut<float>& dx, const float* __restrict__ wt,
                                     float* __restrict__ dw, float* __restrict__ dbias, int64_t d0, int64_t d1,
                                     bool accumulate) {
  const int64_t L = a.L, E = a.E, nblk = (d1 - d0) / 16;
  alignas(64) float ones[16];
  std::fill(ones, ones + 16, 1.0f);
  const v16f one = load16(ones);
  // per block: dw[k] for k < 4, dbias: per-image float sums added in image order. Images outer, blocks inner: the
  // blocks of an image read and write neighbouring cache lines of the same rows, and the next block's rows are
  // fetched during this one (blocks outer, each block walked the whole batch's rows, one line per row out of cache)
  std::vector<double> acc(static_cast<size_t>(nblk) * 5 * 16, 0.0);
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t kb = 0; kb < nblk; ++kb) {
      const int64_t e0 = d0 + 16 * kb;
      const v16f w0 = load16(wt + e0), w1 = load16(wt + E + e0), w2 = load16(wt + 2 * E + e0),
                 w3 = load16(wt + 3 * E + e0);
      const v16f bias = a.bias ? load16(a.bias + e0) : v16f{};
      const float* xb = a.x + b * a.sb + e0;
      const float* gb = gout.p + b * gout.sb + e0;
      float* db = dx.p + b * dx.sb + e0;
      const int64_t nb = kb + 1 < nblk ? b : b + 1, ne0 = kb + 1 < nblk ? e0 + 16 : d0;
      const bool next = nb < a.batch;
      const float* nx = next ? a.x + nb * a.sb + ne0 : nullptr;
      const float* ng = next ? gout.p + nb * gout.sb + ne0 : nullptr;
      const float* nd = next ? dx.p + nb * dx.sb + ne0 : nullptr;
      auto x_at = [&](int64_t s) { return s < 0 ? v16f{} : load16(xb + (a.reverse ? L - 1 - s : s) * a.sl); };
      // inputs at scan steps s-3 .. s, and g at s+1 .. s+3 (zero past the end)
      v16f x3 = x_at(L - 4), x2 = x_at(L - 3), x1 = x_at(L - 2), x0 = x_at(L - 1);
      v16f g1 = {}, g2 = {}, g3 = {};
      v16f sw0 = {}, sw1 = {}, sw2 = {}, sw3 = {}, sb = {};
      for (int64_t s = L - 1; s >= 0; --s) {
        const int64_t t = a.reverse ? L - 1 - s : s;
        if (next) {
          __builtin_prefetch(nx + t * a.sl);
          __builtin_prefetch(ng + t * gout.sl);
          __builtin_prefetch(nd + t * dx.sl, 1);
        }
        const v16f go = load16(gb + t * gout.sl);
        v16f g = go;
        if (a.silu) {
          const v16f pre = conv_pre16(bias, w0, w1, w2, w3, x3, x2, x1, x0);
          const v16f sg = map16(pre, [](float v) { return sigmoid_f(v); });
          g = go * sg * (one + pre * (one - sg));
        }
        sb = sb + g;
        sw0 = sw0 + g * x3;
        sw1 = sw1 + g * x2;
        sw2 = sw2 + g * x1;
        sw3 = sw3 + g * x0;
        v16f d = w3 * g;
        d = d + w2 * g1;
        d = d + w1 * g2;
        d = d + w0 * g3;
        store16(db + t * dx.sl, accumulate ? load16(db + t * dx.sl) + d : d);
        g3 = g2;
        g2 = g1;
        g1 = g;
        x0 = x1;
        x1 = x2;
        x2 = x3;
        x3 = x_at(s - 4);
      }
      alignas(64) float part[5][16];
      store16(part[0], sw0);
      store16(part[1], sw1);
      store16(part[2], sw2);
      store16(part[3], sw3);
      store16(part[4], sb);
      double* ak = acc.data() + kb * 80;
      for (int k = 0; k < 5; ++k)
        for (int j = 0; j < 16; ++j) ak[16 * k + j] += static_cast<double>(part[k][j]);
    }
  }
  for (int64_t kb = 0; kb < nblk; ++kb)
    for (int j = 0; j < 16; ++j) {
      const int64_t e = d0 + 16 * kb + j;
      for (int k = 0; k < 4; ++k) dw[e * 4 + k] = static_cast<float>(acc[kb * 80 + 16 * k + j]);
      if (dbias) dbias[e] = static_cast<float>(acc[kb * 80 + 64 + j]);
    }
}
#endif  // DYVM_HAVE_N16

// (K, E) copy of the (E, K) taps
template <typename T>
std::vector<T> taps_by_k(const T* w, int64_t E, int64_t K) {
  std::vector<T> wt(static_cast<size_t>(E * K));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t k = 0; k < K; ++k) wt[k * E + e] = w[e * K + k];
  return wt;
}

}  // namespace

// ------------------------------------ bindings -----------------------------------------
#ifndef DYVM_SCAN_STANDALONE
namespace {

// (B, E, L) output: contiguous, or channel-last memory (B, L, E) viewed as (B, E, L)
at::Tensor empty_bel(const at::Tensor& like, bool channels_last) {
  if (!channels_last) return at::empty(like.sizes(), like.options());
  return at::empty({like.size(0), like.size(2), like.size(1)}, like.options()).transpose(1, 2);
}

// The sum over dim 0 of per-thread-chunk partials (K, ...): the one slab itself where K = 1
at::Tensor chunk_total(const at::Tensor& partials) {
  return partials.size(0) == 1 ? partials[0] : partials.sum(0);
}

// The same for small float32 partials (K, ...) of a few thousand elements: added into slab 0 in a plain loop, in slab
// order (an ATen sum's dispatch and output cost more than the adds), slab 0 returned
at::Tensor small_chunk_total(at::Tensor& partials) {
  float* p = partials.data_ptr<float>();
  const int64_t K = partials.size(0), n = K ? partials.numel() / K : 0;
  for (int64_t c = 1; c < K; ++c)
    for (int64_t i = 0; i < n; ++i) p[i] += p[c * n + i];
  return partials[0];
}

template <typename T>
Strided<T> strided(const at::Tensor& t) {
  return {t.data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2)};
}
template <typename T>
StridedOut<T> strided_out(at::Tensor& t) {
  return {t.data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2)};
}

void check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const at::Tensor& Bm, const at::Tensor& Cm,
                  const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                  const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(u.device().is_cpu(), "selective_scan_cpp: CPU tensors only");
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "u, delta must be (B, E, L)");
  const int64_t Bsz = u.size(0), E = u.size(1), L = u.size(2);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == E, "A must be (E, N)");
  const int64_t N = A.size(1);
  TORCH_CHECK(Bm.dim() == 3 && Bm.size(0) == Bsz && Bm.size(1) == L && Bm.size(2) == N,
              "B must be (B, L, N) here");
  TORCH_CHECK(Cm.sizes() == Bm.sizes(), "C must be (B, L, N) here");
  TORCH_CHECK((Bm.stride(2) == 1 || N == 1) && (Cm.stride(2) == 1 || N == 1),
              "B, C must have unit stride over N");
  const auto st = u.scalar_type();
  for (const at::Tensor* t : {&u, &delta, &A, &Bm, &Cm}) {
    TORCH_CHECK(t->scalar_type() == st && t->device().is_cpu(), "inputs must be CPU tensors of one dtype");
  }
  TORCH_CHECK(A.is_contiguous(), "A must be contiguous");
  if (D) TORCH_CHECK(D->numel() == E && D->scalar_type() == st && D->is_contiguous(), "bad D");
  if (bias) TORCH_CHECK(bias->numel() == E && bias->scalar_type() == st && bias->is_contiguous(), "bad delta_bias");
  if (z) TORCH_CHECK(z->sizes() == u.sizes() && z->scalar_type() == st && z->device().is_cpu(), "bad z");
}

template <typename T>
Args<T> make_args(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const at::Tensor& Bm, const at::Tensor& Cm,
                  const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                  const c10::optional<at::Tensor>& bias, bool softplus, bool reverse) {
  Args<T> a;
  a.u = strided<T>(u);
  a.delta = strided<T>(delta);
  a.z = z ? strided<T>(*z) : Strided<T>{nullptr, 0, 0, 0};
  a.A = A.data_ptr<T>();
  a.Bm = Bm.data_ptr<T>();
  a.Cm = Cm.data_ptr<T>();
  a.sBb = Bm.stride(0);
  a.sBl = Bm.stride(1);
  a.sCb = Cm.stride(0);
  a.sCl = Cm.stride(1);
  a.D = D ? D->data_ptr<T>() : nullptr;
  a.bias = bias ? bias->data_ptr<T>() : nullptr;
  a.batch = u.size(0);
  a.E = u.size(1);
  a.L = u.size(2);
  a.N = A.size(1);
  a.softplus = softplus;
  a.reverse = reverse;
  return a;
}

// Whether the lanes kernels (forward_lanes16, backward_lanes16) serve a call: float rows of 16 states in
// whole blocks of 16 channels, every (B, E, L) tensor channel-last (gout too, when given), and sequences
// whose per-thread buffers (about 4.5 KB a step in the backward on AVX-512, 2.5 KB on AVX2) stay in L2, up to
// L = 512.
// Units per parallel_for task of the forward scan: enough rows to amortise the task overhead (~L*N*20 flops per row);
// the lanes kernel's units are (image, block of 16 channels).
int64_t scan_forward_grain(int64_t L, bool lanes) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, L) / (lanes ? 16 : 1));
}

// Whether the lanes kernels serve a call: the forward's, or with gout the backward's.
bool lanes_layout(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const c10::optional<at::Tensor>& z, bool channels_last, const c10::optional<at::Tensor>& gout) {
  return DYVM_LANES && u.scalar_type() == at::kFloat && A.size(1) == 16 && u.size(1) % 16 == 0 &&
         u.size(2) <= 512 && channels_last && u.stride(1) == 1 && delta.stride(1) == 1 &&
         (!z || z->stride(1) == 1) && (!gout || gout->stride(1) == 1);
}

at::Tensor scan_forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                        const at::Tensor& Bm, const at::Tensor& Cm,
                        const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                        const c10::optional<at::Tensor>& bias, bool softplus, bool reverse,
                        bool channels_last) {
  check_inputs(u, delta, A, Bm, Cm, D, z, bias);
  at::Tensor out = empty_bel(u, channels_last);
  const int64_t rows = u.size(0) * u.size(1);
  const int64_t L = u.size(2);
  if (rows == 0 || L == 0) return out;
  const bool lanes = lanes_layout(u, delta, A, z, channels_last, {});
  const int64_t units = lanes ? rows / 16 : rows;
  const int64_t grain = scan_forward_grain(L, lanes);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "dyvm_selective_scan_fwd", [&] {
    const Args<scalar_t> a = make_args<scalar_t>(u, delta, A, Bm, Cm, D, z, bias, softplus, reverse);
    const StridedOut<scalar_t> o = strided_out<scalar_t>(out);
    at::parallel_for(0, units, grain, [&](int64_t r0, int64_t r1) {
      forward_dispatch(a, o, r0, r1, lanes);
    });
  });
  return out;
}

// The backward's output pointers over the tensors scan_backward / scan_backward_dt allocate; an empty tensor stands
// for a gradient that is not written (no z, D or delta_bias; dΔ with dt_proj inside): its pointer is null. (Only
// read where every dimension is non-zero.)
template <typename T>
Grads<T> grads_of(at::Tensor& du, at::Tensor& ddelta, at::Tensor& dz, at::Tensor& dA, at::Tensor& dBp,
                  at::Tensor& dCp, at::Tensor& dD, at::Tensor& dbias) {
  const auto out = [](at::Tensor& t) { return t.numel() ? strided_out<T>(t) : StridedOut<T>{nullptr, 0, 0, 0}; };
  const auto ptr = [](at::Tensor& t) { return t.numel() ? t.data_ptr<T>() : nullptr; };
  Grads<T> g;
  g.du = strided_out<T>(du);
  g.ddelta = out(ddelta);
  g.dz = out(dz);
  g.dA = dA.data_ptr<T>();
  g.dB = dBp.data_ptr<T>();
  g.dC = dCp.data_ptr<T>();
  g.dD = ptr(dD);
  g.dbias = ptr(dbias);
  return g;
}

std::vector<at::Tensor> scan_backward(const at::Tensor& gout, const at::Tensor& u,
                                      const at::Tensor& delta, const at::Tensor& A,
                                      const at::Tensor& Bm, const at::Tensor& Cm,
                                      const c10::optional<at::Tensor>& D,
                                      const c10::optional<at::Tensor>& z,
                                      const c10::optional<at::Tensor>& bias, bool softplus,
                                      bool reverse, bool channels_last) {
  check_inputs(u, delta, A, Bm, Cm, D, z, bias);
  TORCH_CHECK(gout.sizes() == u.sizes() && gout.scalar_type() == u.scalar_type(),
              "grad_out must be (B, E, L) in u's dtype");
  const int64_t Bsz = u.size(0), E = u.size(1), L = u.size(2), N = A.size(1);
  const bool lanes = lanes_layout(u, delta, A, z, channels_last, gout);
  const int64_t units = lanes ? E / 16 : E;  // channels, or blocks of 16 for the lanes kernel
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(units, at::get_num_threads()));
  at::Tensor du = empty_bel(u, channels_last);
  at::Tensor ddelta = empty_bel(u, channels_last);
  at::Tensor dA = at::zeros_like(A);
  at::Tensor dBp = at::zeros({chunks, Bsz, L, N}, u.options());
  at::Tensor dCp = at::zeros({chunks, Bsz, L, N}, u.options());
  // (absent optional inputs get empty gradients)
  at::Tensor dD = D ? at::zeros_like(*D) : at::empty({0}, u.options());
  at::Tensor dz = z ? empty_bel(u, channels_last) : at::empty({0}, u.options());
  at::Tensor dbias = bias ? at::zeros_like(*bias) : at::empty({0}, u.options());
  if (Bsz > 0 && E > 0 && L > 0) {
    AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "dyvm_selective_scan_bwd", [&] {
      const Args<scalar_t> a = make_args<scalar_t>(u, delta, A, Bm, Cm, D, z, bias, softplus, reverse);
      const Grads<scalar_t> g = grads_of<scalar_t>(du, ddelta, dz, dA, dBp, dCp, dD, dbias);
      const Strided<scalar_t> go = strided<scalar_t>(gout);
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t step = lanes ? 16 : 1;
          const int64_t d0 = step * (c * units / chunks), d1 = step * ((c + 1) * units / chunks);
          backward_dispatch(a, go, g, c, d0, d1, lanes);
        }
      });
    });
  }
  at::Tensor dB = chunk_total(dBp);
  at::Tensor dC = chunk_total(dCp);
  return {du, ddelta, dA, dB, dC, dD, dz, dbias};
}

// One SSM direction of a training step with dt_proj inside the lanes kernels: Δ's raw value is
// Σ_r dtl[b, t, r] dtw[e, r] (then + delta_bias, softplus), computed per step instead of read from a (B, E, L)
// tensor, and the backward returns the gradients of dtl and dtw instead of Δ's. dtl: (B, L, R) float32 with unit
// stride over r (the first R columns of x_proj's output); dtw: dt_proj's weight (E, R), contiguous. The other
// arguments as scan_forward's with delta_softplus and channels_last set; only where the lanes kernels serve the
// call (lanes_dt_applies: lanes_layout's rule, with no Δ tensor), which the caller checks.
bool lanes_dt_applies(const at::Tensor& u, const at::Tensor& A, const c10::optional<at::Tensor>& z) {
  return lanes_layout(u, u, A, z, true, {});
}

Args<float> dt_args(const at::Tensor& u, const at::Tensor& dtl, const at::Tensor& dtw, const at::Tensor& A,
                    const at::Tensor& Bm, const at::Tensor& Cm, const c10::optional<at::Tensor>& D,
                    const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias, bool reverse) {
  check_inputs(u, u, A, Bm, Cm, D, z, bias);  // u stands in for delta, which is not read
  TORCH_CHECK(lanes_dt_applies(u, A, z), "scan with dt_proj: needs float32 channel-last (B, E, L) "
              "with E a multiple of 16, L <= 512 and 16 states on a build with the lanes kernels");
  const int64_t R = dtw.size(1);
  TORCH_CHECK(dtw.dim() == 2 && dtw.size(0) == u.size(1) && dtw.scalar_type() == at::kFloat && dtw.is_contiguous() &&
              R >= 1, "dt_proj weight must be (E, R) float32, contiguous");
  TORCH_CHECK(dtl.dim() == 3 && dtl.size(0) == u.size(0) && dtl.size(1) == u.size(2) && dtl.size(2) == R &&
              dtl.scalar_type() == at::kFloat && dtl.stride(2) == 1, "dt must be (B, L, R) float32, unit stride over R");
  Args<float> a = make_args<float>(u, u, A, Bm, Cm, D, z, bias, true, reverse);
  a.delta = Strided<float>{nullptr, 0, 0, 0};
  a.dtl = dtl.data_ptr<float>();
  a.dtw = dtw.data_ptr<float>();
  a.sdb = dtl.stride(0);
  a.sdl = dtl.stride(1);
  a.R = R;
  return a;
}

// Args::scale from an optional (B,) float32 tensor (the ops' `scale`: a per-image factor on the gated output)
void set_scale(Args<float>& a, const at::Tensor& u, const c10::optional<at::Tensor>& z,
               const c10::optional<at::Tensor>& scale) {
  if (!scale) return;
  TORCH_CHECK(z, "scan with dt_proj: a scale needs the z gate");
  TORCH_CHECK(scale->dim() == 1 && scale->size(0) == u.size(0) && scale->scalar_type() == at::kFloat &&
              scale->is_contiguous() && scale->device().is_cpu(), "scan with dt_proj: scale must be (B,) float32");
  a.scale = scale->data_ptr<float>();
}

// The forward into out (B, E, L) channel-last; a.accumulate: added to what is there
void run_forward_dt(const Args<float>& a, at::Tensor& out) {
  const int64_t units = a.batch * a.E / 16;
  if (units == 0 || a.L == 0) return;
#if DYVM_LANES
  const StridedOut<float> o = strided_out<float>(out);
  at::parallel_for(0, units, scan_forward_grain(a.L, true),
                   [&](int64_t k0, int64_t k1) { forward_lanes16(a, o, k0, k1); });
#endif
}

// scale (B,): the output of image b times scale[b]
at::Tensor scan_forward_dt(const at::Tensor& u, const at::Tensor& dtl, const at::Tensor& dtw, const at::Tensor& A,
                           const at::Tensor& Bm, const at::Tensor& Cm, const c10::optional<at::Tensor>& D,
                           const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias, bool reverse,
                           const c10::optional<at::Tensor>& scale) {
  Args<float> a = dt_args(u, dtl, dtw, A, Bm, Cm, D, z, bias, reverse);
  set_scale(a, u, z, scale);
  at::Tensor out = empty_bel(u, true);
  run_forward_dt(a, out);
  return out;
}

// out += the scan's output, in the kernel's stores (the training mixer's node adds its second direction so)
void scan_forward_dt_add(at::Tensor& out, const at::Tensor& u, const at::Tensor& dtl, const at::Tensor& dtw,
                         const at::Tensor& A, const at::Tensor& Bm, const at::Tensor& Cm,
                         const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                         const c10::optional<at::Tensor>& bias, bool reverse, const c10::optional<at::Tensor>& scale) {
  Args<float> a = dt_args(u, dtl, dtw, A, Bm, Cm, D, z, bias, reverse);
  set_scale(a, u, z, scale);
  TORCH_CHECK(out.sizes() == u.sizes() && out.scalar_type() == at::kFloat && out.stride(1) == 1,
              "forward_dt_add_: out must be (B, E, L) float32 channel-last");
  a.accumulate = true;
  run_forward_dt(a, out);
}

// -> {du, dxdbl (B, L, R + 2N), dA, dD, dz, dbias, ddt_weight (E, R), dscale (B,)}: dxdbl is the gradient of
// x_proj's output (dt's R columns, then B's and C's N each, in time order), which the kernels write straight into its
// rows.
// dz_out ((B, E, L) channel-last float32): z's gradient is written there (added to what is there with dz_accumulate)
// and the returned dz is empty. scale (B,), as in scan_forward_dt: grad_out of image b is taken times scale[b], and
// dscale[b] = Σ grad_out · (the output of image b before its scale); empty without a scale.
std::vector<at::Tensor> scan_backward_dt(const at::Tensor& gout, const at::Tensor& u, const at::Tensor& dtl,
                                         const at::Tensor& dtw, const at::Tensor& A, const at::Tensor& Bm,
                                         const at::Tensor& Cm, const c10::optional<at::Tensor>& D,
                                         const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias,
                                         bool reverse, const c10::optional<at::Tensor>& dz_out, bool dz_accumulate,
                                         const c10::optional<at::Tensor>& scale) {
  Args<float> a = dt_args(u, dtl, dtw, A, Bm, Cm, D, z, bias, reverse);
  set_scale(a, u, z, scale);
  TORCH_CHECK(gout.sizes() == u.sizes() && gout.scalar_type() == u.scalar_type() && gout.stride(1) == 1,
              "grad_out must be (B, E, L) channel-last in u's dtype");
  const int64_t Bsz = u.size(0), E = u.size(1), L = u.size(2), N = A.size(1), R = a.R;
  // Work split: images across the threads (each image's dB, dC and dtl rows then come from one thread, and each
  // thread reads and writes whole rows of u, grad_out, z, du and dz), or, with fewer images than threads, channel
  // blocks (each thread a slab of those partials, summed after). Split by images the call takes 0.95x the time at the
  // demo's shapes (interleaved in one process; docs/speed/log.md "The training step's work split by images and rows").
  const int64_t units = E / 16, threads = at::get_num_threads();
  const bool by_images = Bsz >= threads;
  const int64_t chunks = by_images ? std::max<int64_t>(1, threads) : std::max<int64_t>(1, std::min(units, threads));
  const int64_t rslabs = by_images ? 1 : chunks;   // slabs of the per-image partials (dB, dC, dtl, the gates')
  const int64_t wslabs = by_images ? chunks : 1;   // slabs of the per-channel gradients (dA, dD, dbias, dtw)
  at::Tensor du = empty_bel(u, true);
  // every element of these written by the kernel where it runs
  at::Tensor dA = at::empty({wslabs, E, N}, u.options());
  at::Tensor dxp = at::empty({rslabs, Bsz, L, R + 2 * N}, u.options());
  at::Tensor ddtw = at::empty({wslabs, E, R}, u.options());
  at::Tensor dD = at::empty({wslabs, D ? E : 0}, u.options());
  if (dz_out)
    TORCH_CHECK(z && dz_out->sizes() == u.sizes() && dz_out->scalar_type() == at::kFloat && dz_out->stride(1) == 1,
                "backward_dt: dz_out needs z and must be (B, E, L) float32 channel-last");
  at::Tensor dz = !z ? at::empty({0}, u.options()) : dz_out ? *dz_out : empty_bel(u, true);
  at::Tensor dbias = at::empty({wslabs, bias ? E : 0}, u.options());
  at::Tensor dscp = scale ? at::zeros({rslabs, Bsz}, u.options()) : at::empty({0}, u.options());
  const bool runs = DYVM_LANES && Bsz > 0 && E > 0 && L > 0;
  if (!runs)  // the sums over no terms
    dA.zero_(), dxp.zero_(), ddtw.zero_(), dD.zero_(), dbias.zero_();
#if DYVM_LANES
  if (runs) {
    at::Tensor no_ddelta = at::empty({0}, u.options());  // dΔ is not written: dt's and dt_proj's gradients are
    Grads<float> g = grads_of<float>(du, no_ddelta, dz, dA, dxp, dxp, dD, dbias);
    g.ddtl = dxp.data_ptr<float>();
    g.dB = g.ddtl + R;
    g.dC = g.ddtl + R + N;
    g.srow = R + 2 * N;
    g.dz_accumulate = dz_out && dz_accumulate;
    g.dscale = scale ? dscp.data_ptr<float>() : nullptr;
    g.ddtw = ddtw.data_ptr<float>();
    const Strided<float> go = strided<float>(gout);
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        if (!by_images) {
          backward_lanes16(a, go, g, c, 16 * (c * units / chunks), 16 * ((c + 1) * units / chunks), 0, Bsz);
          continue;
        }
        Grads<float> gc = g;  // this thread's slab of the per-channel gradients
        gc.dA += c * E * N;
        gc.ddtw += c * E * R;
        if (gc.dD) gc.dD += c * E;
        if (gc.dbias) gc.dbias += c * E;
        backward_lanes16(a, go, gc, 0, 0, E, c * Bsz / chunks, (c + 1) * Bsz / chunks);
      }
    });
  }
#endif
  if (dz_out) dz = at::empty({0}, u.options());
  return {du, chunk_total(dxp), small_chunk_total(dA), small_chunk_total(dD), dz, small_chunk_total(dbias),
          small_chunk_total(ddtw), scale ? chunk_total(dscp) : dscp};
}

// ----------------------------- causal conv1d bindings ----------------------------------

void check_conv(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                const c10::optional<at::Tensor>& mask) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "causal_conv1d_cpp: CPU tensors only");
  TORCH_CHECK(x.dim() == 3, "causal_conv1d_cpp: x must be (B, E, L)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "causal_conv1d_cpp: float32/float64 only");
  TORCH_CHECK(w.dim() == 2 && w.size(0) == x.size(1) && w.size(1) >= 1 && w.is_contiguous() &&
              w.scalar_type() == x.scalar_type(), "causal_conv1d_cpp: weight must be contiguous (E, K), x's dtype");
  if (bias) TORCH_CHECK(bias->device().is_cpu() && bias->numel() == x.size(1) && bias->is_contiguous() &&
                        bias->scalar_type() == x.scalar_type(), "causal_conv1d_cpp: bad bias");
  if (mask) TORCH_CHECK(mask->device().is_cpu() && mask->dim() == 2 && mask->size(0) == x.size(0) &&
                        mask->size(1) == x.size(2) && mask->scalar_type() == x.scalar_type(),
                        "causal_conv1d_cpp: mask must be (B, L) in x's dtype");
}

template <typename T>
ConvArgs<T> make_conv_args(const at::Tensor& x, const at::Tensor& w,
                           const c10::optional<at::Tensor>& bias, bool silu,
                           const c10::optional<at::Tensor>& mask, bool reverse) {
  ConvArgs<T> a;
  a.x = x.data_ptr<T>();
  a.sb = x.stride(0);
  a.se = x.stride(1);
  a.sl = x.stride(2);
  a.m = mask ? mask->data_ptr<T>() : nullptr;
  a.msb = mask ? mask->stride(0) : 0;
  a.msl = mask ? mask->stride(1) : 0;
  a.w = w.data_ptr<T>();
  a.bias = bias ? bias->data_ptr<T>() : nullptr;
  a.batch = x.size(0);
  a.E = x.size(1);
  a.L = x.size(2);
  a.K = w.size(1);
  a.silu = silu;
  a.reverse = reverse;
  return a;
}

// conv_forward_cl16 over the first `images` images of a (a.rows may map them to x's images), taps wt (taps_by_k)
template <typename T>
void run_conv_cl16(const ConvArgs<T>& a, const StridedOut<T>& o, const T* wt, int64_t images) {
  const int64_t gu = std::max<int64_t>(1, 2048 / (16 * a.L));
  at::parallel_for(0, images * (a.E / 16), gu, [&](int64_t k0, int64_t k1) { conv_forward_cl16(a, o, wt, k0, k1); });
}

at::Tensor conv_forward(const at::Tensor& x, const at::Tensor& w,
                        const c10::optional<at::Tensor>& bias, bool silu,
                        const c10::optional<at::Tensor>& mask, bool reverse, bool channels_last) {
  check_conv(x, w, bias, mask);
  at::Tensor out = empty_bel(x, channels_last);
  const int64_t rows = x.size(0) * x.size(1), L = x.size(2), K = w.size(1);
  if (rows == 0 || L == 0) return out;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, L * (K + 4)));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dyvm_conv_fwd", [&] {
    const ConvArgs<scalar_t> a = make_conv_args<scalar_t>(x, w, bias, silu, mask, reverse);
    const StridedOut<scalar_t> o = strided_out<scalar_t>(out);
    if (a.se == 1 && o.se == 1) {  // channel-last in and out: rows of contiguous channels, no transposes
      const std::vector<scalar_t> wt = taps_by_k(a.w, a.E, K);
      const int64_t E = a.E, steps = x.size(0) * L;
#if DYVM_HAVE_N16 && DYVM_CONV16
      if (conv_cl16_applies(a)) {  // whole sequences of 16-channel blocks, in registers
        run_conv_cl16(a, o, wt.data(), x.size(0));
        return;
      }
#endif
      const int64_t g = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, E * (K + 4)));
      at::parallel_for(0, steps, g, [&](int64_t r0, int64_t r1) { conv_forward_cl(a, o, wt.data(), r0, r1); });
    } else {
      at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) { conv_forward_rows(a, o, r0, r1); });
    }
  });
  return out;
}

// dx_out (a (B, E, L) float tensor of x's shape): x's gradient is written there (added to what is there with
// dx_accumulate) instead of returned (the returned dx is then empty); in the 16-channel kernel's stores where it
// serves and dx_out is channel-last, else through a fresh dx.
std::vector<at::Tensor> conv_backward(const at::Tensor& gout, const at::Tensor& x,
                                      const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                                      bool silu, const c10::optional<at::Tensor>& mask, bool reverse,
                                      bool channels_last, bool mask_grad, const c10::optional<at::Tensor>& dx_out,
                                      bool dx_accumulate) {
  check_conv(x, w, bias, mask);
  TORCH_CHECK(gout.sizes() == x.sizes() && gout.scalar_type() == x.scalar_type(),
              "grad_out must be (B, E, L) in x's dtype");
  TORCH_CHECK(!mask_grad || mask, "mask_grad needs a mask");
  const int64_t Bsz = x.size(0), E = x.size(1), L = x.size(2);
  // one chunk of channels per thread; each owns dw, dbias of its channels and a (B, L) dmask
  // partial, summed at the end (no races, independent of scheduling)
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(E, at::get_num_threads()));
  if (dx_out)
    TORCH_CHECK(dx_out->sizes() == x.sizes() && dx_out->scalar_type() == x.scalar_type() && dx_out->device().is_cpu(),
                "conv_backward: dx_out must be (B, E, L) in x's dtype");
  // dx_out channel-last: the 16-channel kernel may write (or add) into it directly
  const bool into = dx_out && dx_out->stride(1) == 1 && channels_last;
  at::Tensor dx = into ? *dx_out : empty_bel(x, channels_last);
  at::Tensor dw = at::zeros_like(w);
  at::Tensor dbias = bias ? at::zeros_like(*bias) : at::empty({0}, x.options());
  at::Tensor dmp = mask_grad ? at::zeros({chunks, Bsz, L}, x.options()) : at::empty({0}, x.options());
  if (Bsz > 0 && E > 0 && L > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dyvm_conv_bwd", [&] {
      const ConvArgs<scalar_t> a = make_conv_args<scalar_t>(x, w, bias, silu, mask, reverse);
      const bool cl = a.se == 1 && dx.stride(1) == 1;  // channel-last x and dx (grad_out: any layout)
      const Strided<scalar_t> go = strided<scalar_t>(gout);
      StridedOut<scalar_t> pdx = strided_out<scalar_t>(dx);
      scalar_t* pdw = dw.data_ptr<scalar_t>();
      scalar_t* pdb = bias ? dbias.data_ptr<scalar_t>() : nullptr;
      scalar_t* pdm = mask_grad ? dmp.data_ptr<scalar_t>() : nullptr;
      const std::vector<scalar_t> wt = cl ? taps_by_k(a.w, E, a.K) : std::vector<scalar_t>();
      bool cl16 = false;  // conv_backward_cl16_chunk: chunks of whole 16-channel blocks
#if DYVM_HAVE_N16 && DYVM_CONV16
      cl16 = cl && go.se == 1 && !pdm && conv_cl16_applies(a);
#endif
      if (into && !cl16) {  // the other kernels write a fresh dx, added into dx_out below
        dx = empty_bel(x, channels_last);
        pdx = strided_out<scalar_t>(dx);
      }
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t step = cl16 ? 16 : 1, units = E / step;
          const int64_t d0 = step * (c * units / chunks), d1 = step * ((c + 1) * units / chunks);
          scalar_t* dm = pdm ? pdm + c * Bsz * L : nullptr;
#if DYVM_HAVE_N16 && DYVM_CONV16
          if (cl16) {
            conv_backward_cl16_chunk(a, go, pdx, wt.data(), pdw, pdb, d0, d1, into && dx_accumulate);
            continue;
          }
#endif
          if (cl)
            conv_backward_cl_chunk(a, go, pdx, wt.data(), pdw, pdb, dm, d0, d1);
          else
            conv_backward_chunk(a, go, pdx, pdw, pdb, dm, d0, d1);
        }
      });
    });
  }
  at::Tensor dmask = !mask_grad ? at::empty({0}, x.options()) : chunk_total(dmp);
  if (dx_out) {
    if (!dx.is_same(*dx_out)) {
      at::Tensor target = *dx_out;
      if (dx_accumulate)
        target.add_(dx);
      else
        target.copy_(dx);
    }
    dx = at::empty({0}, x.options());
  }
  return {dx, dw, dbias, dmask};
}

// ----------------------- a block and its mixer in one call (inference) ------------------

// Inference calls below autograd: the inference ops (mix_forward, block_forward, prune_stage, stack_forward) serve
// calls with no autograd (mix_cpp.applies), so a guard at their start lets their ATen calls skip the autograd and
// view-tracking dispatch keys, as under torch.inference_mode, while what they return stays an ordinary tensor.
// Under torch.no_grad a whole forward of the demo's model at batch 1 took ~10% longer than under inference_mode
// before (its ~1000 small calls).

// The rows `rows` (n,) of a (B, E, L) channel-last view, copied: (n, E, L) channel-last.
at::Tensor rows_channel_last(const at::Tensor& t, const at::Tensor& rows) {
  return t.transpose(1, 2).index_select(0, rows).transpose(1, 2);
}

// conv_forward (SiLU, no mask, channel-last output) of the images `rows` (n,) of x (B, E, L): (n, E, L). Where
// conv_forward_cl16 serves, it reads those images of x in place through a row map; else from a copy of them.
at::Tensor conv_forward_rows(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool reverse,
                             const at::Tensor& rows) {
#if DYVM_HAVE_N16 && DYVM_CONV16
  if (x.scalar_type() == at::kFloat) {
    check_conv(x, w, bias, c10::nullopt);
    ConvArgs<float> a = make_conv_args<float>(x, w, bias, true, c10::nullopt, reverse);
    if (conv_cl16_applies(a)) {
      const int64_t n = rows.numel();
      at::Tensor out = at::empty({n, a.L, a.E}, x.options()).transpose(1, 2);
      if (n == 0 || a.L == 0) return out;
      a.rows = rows.data_ptr<int64_t>();
      a.batch = n;
      run_conv_cl16(a, strided_out<float>(out), taps_by_k(a.w, a.E, a.K).data(), n);
      return out;
    }
  }
#endif
  return conv_forward(rows_channel_last(x, rows), w, bias, true, c10::nullopt, reverse, true);
}

// part added into acc (B, E, L) at its images `rows` (undefined: every image), or part itself without acc;
// returns part, or an undefined tensor once added.
at::Tensor add_rows(at::Tensor* acc, const at::Tensor& rows, const at::Tensor& part) {
  if (!acc) return part;
  if (rows.defined())
    acc->index_add_(0, rows, part);
  else
    acc->add_(part);
  return at::Tensor();
}

// scan_forward (softplus, channel-last) of n images whose gate z is the images `rows` (n,) of z (B, E, L) (undefined:
// z's own n images), added into acc (B, E, L) at those images when acc is given (then an undefined tensor is
// returned), else returned (n, E, L). Where forward_lanes16 serves, it reads z's images and adds into acc's in place
// through row maps (the same values: one float add per element); else from a copy of the rows and with add_rows.
at::Tensor scan_forward_rows(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& Bm,
                             const at::Tensor& Cm, const at::Tensor& D, const at::Tensor& z, const at::Tensor& bias,
                             bool reverse, const at::Tensor& rows, at::Tensor* acc) {
#if DYVM_LANES
  if (u.scalar_type() == at::kFloat && z.scalar_type() == at::kFloat && lanes_layout(u, delta, A, z, true, {}) &&
      (!acc || (acc->scalar_type() == at::kFloat && acc->stride(1) == 1))) {
    check_inputs(u, delta, A, Bm, Cm, D, c10::nullopt, bias);
    const int64_t n = u.size(0), E = u.size(1), L = u.size(2);
    TORCH_CHECK(z.device().is_cpu() && z.size(1) == E && z.size(2) == L && (rows.defined() ? rows.numel() == n : z.size(0) == n) &&
                (!acc || (acc->size(0) == z.size(0) && acc->size(1) == E && acc->size(2) == L)),
                "mix_forward: the branch's z, rows and output must match u");
    at::Tensor out = acc ? *acc : empty_bel(u, true);
    if (n > 0 && L > 0) {
      Args<float> a = make_args<float>(u, delta, A, Bm, Cm, D, c10::nullopt, bias, true, reverse);
      a.z = strided<float>(z);
      a.zrows = rows.defined() ? rows.data_ptr<int64_t>() : nullptr;
      a.orows = acc ? a.zrows : nullptr;
      a.accumulate = acc != nullptr;
      const StridedOut<float> o = strided_out<float>(out);
      at::parallel_for(0, n * (E / 16), scan_forward_grain(L, true),
                       [&](int64_t k0, int64_t k1) { forward_lanes16(a, o, k0, k1); });
    }
    return acc ? at::Tensor() : out;
  }
#endif
  return add_rows(acc, rows, scan_forward(u, delta, A, Bm, Cm, D, rows.defined() ? rows_channel_last(z, rows) : z,
                                          bias, true, reverse, true));
}

// --------------------------- x_proj and dt_proj at inference: a matmul on a weight panel ---------------------------
// torch's float32 matmul (MKL's sgemm) packs the weight on every call and, for the mixer's narrow matmuls, runs far
// below the core's rate: x_proj (E -> R + 2N = 44 outputs at Vim-T) at 0.6x, dt_proj (R = 12 inputs) at 0.3-0.5x
// with two threads (docs/speed/2026-12-05-avx512/panel_matmul.txt). Here the weight is laid out once as a panel
// (in, out rounded up to 16; the Python mixer remembers it like A) and a register tile of kPanRows rows x 2 native
// vectors of outputs accumulates over the inputs in order, so every output sums its products in the same order
// whatever the tiling or the thread count (the fused blocks and the Python mixer give identical values).
typedef float pan_vn __attribute__((vector_size(
#if defined(__AVX512F__)
    64
#else
    32
#endif
    )));
constexpr int64_t kPanW = sizeof(pan_vn) / sizeof(float), kPanRows = 6, kPanPad = 16;

// weight (out, in) float32 → its panel (in, out rounded up to 16), zero columns after out
at::Tensor weight_panel(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
              "panel: weight must be a (out, in) float32 CPU tensor");
  const at::Tensor w = weight.contiguous();
  const int64_t out = w.size(0), in = w.size(1), outp = (out + kPanPad - 1) / kPanPad * kPanPad;
  at::Tensor panel = at::zeros({in, outp}, w.options());
  const float* src = w.data_ptr<float>();
  float* dst = panel.data_ptr<float>();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) dst[i * outp + o] = src[o * in + i];
  return panel;
}

// y[r, 0:nc] (r < MR) = x[r] · panel columns [0, NV * kPanW), each output summing its products in input order
template <int MR, int NV>
DYVM_INLINE void panel_tile(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t in, float* y,
                            int64_t ldy, int64_t nc) {
  pan_vn acc[MR][NV] = {};
  for (int64_t i = 0; i < in; ++i, w += ldw) {
    pan_vn wv[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&wv[v], w + v * kPanW, sizeof(pan_vn));
    for (int r = 0; r < MR; ++r) {
      const float xv = x[r * ldx + i];
      for (int v = 0; v < NV; ++v) acc[r][v] += xv * wv[v];
    }
  }
  if (nc == NV * kPanW) {  // whole vectors: a fixed-size copy is a vector store
    for (int r = 0; r < MR; ++r) std::memcpy(y + r * ldy, acc[r], sizeof(acc[r]));
  } else {
    for (int r = 0; r < MR; ++r) std::memcpy(y + r * ldy, acc[r], nc * sizeof(float));
  }
}

template <int NV>
void panel_rows(int64_t nr, const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t in, float* y,
                int64_t ldy, int64_t nc) {
  switch (nr) {  // a tile of exactly the rows left (no repeated rows at batch 1's single class token, say)
    case 1: return panel_tile<1, NV>(x, ldx, w, ldw, in, y, ldy, nc);
    case 2: return panel_tile<2, NV>(x, ldx, w, ldw, in, y, ldy, nc);
    case 3: return panel_tile<3, NV>(x, ldx, w, ldw, in, y, ldy, nc);
    case 4: return panel_tile<4, NV>(x, ldx, w, ldw, in, y, ldy, nc);
    case 5: return panel_tile<5, NV>(x, ldx, w, ldw, in, y, ldy, nc);
    default: return panel_tile<kPanRows, NV>(x, ldx, w, ldw, in, y, ldy, nc);
  }
}

// y (rows, out; row stride ldy) = x (rows, in; row stride ldx) · the panel of a weight (out, in)
void panel_matmul(const float* x, int64_t rows, int64_t in, int64_t ldx, const float* panel, int64_t out, float* y,
                  int64_t ldy) {
  const int64_t outp = (out + kPanPad - 1) / kPanPad * kPanPad, wide = 2 * kPanW;
  const int64_t row_tiles = (rows + kPanRows - 1) / kPanRows, col_tiles = (out + wide - 1) / wide;
  // a task is one tile; fork only for real work (tiles of ~64k multiply-adds per chunk)
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, kPanRows * wide * in));
  at::parallel_for(0, row_tiles * col_tiles, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t / col_tiles * kPanRows, c0 = t % col_tiles * wide;
      const int64_t nr = std::min(kPanRows, rows - r0), nc = std::min(wide, out - c0);
      if (c0 + wide <= outp) {
        panel_rows<2>(nr, x + r0 * ldx, ldx, panel + c0, outp, in, y + r0 * ldy + c0, ldy, nc);
      } else {  // the last 16 (padded) columns on AVX-512: one vector wide
        panel_rows<1>(nr, x + r0 * ldx, ldx, panel + c0, outp, in, y + r0 * ldy + c0, ldy, nc);
      }
    }
  });
}

// x (..., in) float32 · the weight (out, in) whose panel is given → (..., out): the route of x_proj and dt_proj in
// the extension's blocks, and the Python mixer's (op dyvm_scan::panel_linear) at eager float32 inference
at::Tensor panel_linear(const at::Tensor& x, const at::Tensor& panel, int64_t out) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "panel_linear: x must be a float32 CPU tensor (..., in)");
  const int64_t in = x.size(-1);
  TORCH_CHECK(panel.dim() == 2 && panel.size(0) == in && panel.scalar_type() == at::kFloat && panel.is_contiguous() &&
              out >= 1 && panel.size(1) == (out + kPanPad - 1) / kPanPad * kPanPad,
              "panel_linear: panel must be the (in, out rounded up to 16) float32 panel of an (out, in) weight");
  at::Tensor x2 = x.reshape({-1, in});
  if (x2.stride(1) != 1 || (x2.size(0) > 1 && x2.stride(0) < in)) x2 = x2.contiguous();
  const int64_t rows = x2.size(0);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out;
  at::Tensor y = at::empty({rows, out}, x.options());
  if (rows > 0 && in > 0) {
    panel_matmul(x2.data_ptr<float>(), rows, in, x2.stride(0), panel.data_ptr<float>(), out, y.data_ptr<float>(), out);
  } else if (rows > 0) {
    y.zero_();
  }
  return y.view(shape);
}

// ------------------------- in_proj and out_proj at inference: oneDNN on a packed weight -------------------------
// torch's float32 matmul is MKL's sgemm, which packs the weight on every call; oneDNN's matmul on a weight packed
// once (mkldnn._reorder_linear_weight, remembered per layer by the Python mixer while the weight is unchanged) takes
// 0.5-0.9x its time on the AMD AVX-512 kind where the weight is large (Vim-T's in_proj at batch 1: 0.55-0.80x with
// 2 threads, 0.90-0.91x with 1) and up to 3x more where weight and batch are small (the demo's D = 64 layers at
// batch 1; docs/speed/2026-12-04f-avx512/matmul_crossover.txt). The rule below keeps sgemm where oneDNN lost.
// Both the extension's blocks and the Python mixer (through the op dyvm_scan::linear) take the same route for the
// same shapes, so the two give identical values.
bool packed_linear_pays(int64_t rows, int64_t in, int64_t out) {
  const int64_t weights = in * out;
  return weights >= (int64_t{1} << 17) || (weights >= (int64_t{1} << 16) && rows >= 64) ||
         rows * weights >= (int64_t{1} << 24);
}

// x (rows, in) · the packed weight's (out, in)^T, by oneDNN (mkldnn::_linear_pointwise, no epilogue); a bf16 pack
// (given under bf16 autocast) takes x in bf16 and returns bf16, the values autocast's matmul gives
at::Tensor packed_mm(const at::Tensor& x, const at::Tensor& packed) {
  static const auto op = c10::Dispatcher::singleton()
      .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, c10::string_view,
                        c10::List<c10::optional<at::Scalar>>, c10::optional<c10::string_view>)>();
  const at::Tensor xc = (x.scalar_type() == packed.scalar_type() ? x : x.to(packed.scalar_type())).contiguous();
  return op.call(xc, packed, c10::nullopt, "none", c10::List<c10::optional<at::Scalar>>(), c10::nullopt);
}

// Whether a float32 x (rows, in) times weight (out, in)^T runs on `packed` (given, float32 input, rule above); the
// pack is float32, or bf16 under bf16 autocast
bool uses_packed(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& packed) {
  const int64_t in = weight.size(1);
  return packed && packed->defined() && x.scalar_type() == at::kFloat && in > 0 &&
         packed_linear_pays(x.numel() / in, in, weight.size(0));
}

// Whether x (rows, in) · weight^T runs on the weight's panel (given, with a defined, non-empty tensor; float32 x;
// not where oneDNN's pack serves): from 2 rows (at one row MKL's matrix-vector product is faster)
bool uses_panel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& panel) {
  const int64_t in = weight.size(1);
  return panel && panel->defined() && panel->numel() > 0 && x.scalar_type() == at::kFloat && in > 0 &&
         x.numel() / in >= 2;
}

// x (..., in) · weight (out, in)^T at inference: on the packed weight where uses_packed, else on its panel where
// uses_panel, else at::linear (which autocast lowers to 16 bits), what nn.Linear computes. The Python mixer's
// in_proj and out_proj at eager inference.
at::Tensor inference_linear(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& packed,
                            const c10::optional<at::Tensor>& panel) {
  const at::AutoDispatchBelowADInplaceOrView inference_calls;  // see "Inference calls below autograd"
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 2 && x.size(-1) == weight.size(1),
              "linear: x (..., in) and weight (out, in) must agree on in");
  if (!uses_packed(x, weight, packed)) {
    return uses_panel(x, weight, panel) ? panel_linear(x, *panel, weight.size(0)) : at::linear(x, weight);
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(0);
  return packed_mm(x.reshape({-1, weight.size(1)}), *packed).view(shape);
}

// One SSM direction at inference on raw pointers: mixer_branch's float32 route where every fast kernel serves it (the
// conv in registers, x_proj's and dt_proj's panels, the lanes scan), the same kernels on the same numbers in the same
// order (so the same values), with u and the two projections' outputs in one scratch buffer instead of ~30 ATen views
// and allocations a branch (~0.4 µs each, a fifth of a demo layer's time at batch 1). xz: (B, L, 2E) contiguous
// float32 (x its first E channels, z the last E); rows (n,) or null: the sub-batch; y (B, L, E) float32, written
// (accumulate false: every image) or added to at those images; stub_scan: u in the scan's place (mixer_branch's).
bool raw_branch_applies(const at::Tensor& xz, at::TensorList p, at::TensorList panels) {
#if DYVM_LANES && DYVM_CONV16
  if (p.size() != 7 || panels.size() != 2 || xz.dim() != 3 || xz.scalar_type() != at::kFloat || !xz.is_contiguous())
    return false;
  for (const at::Tensor* t : {&p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &p[6], &panels[0], &panels[1]})
    if (t->scalar_type() != at::kFloat || !t->is_contiguous() || !t->device().is_cpu()) return false;
  const int64_t L = xz.size(1), E = xz.size(2) / 2;
  if (E % 16 != 0 || L > 512 || p[5].dim() != 2 || p[5].size(0) != E || p[5].size(1) != 16) return false;
  if (p[0].numel() != 4 * E || p[0].size(0) != E || p[0].size(-1) != 4 || p[1].numel() != E || p[4].numel() != E ||
      p[6].numel() != E || p[2].dim() != 2 || p[2].size(1) != E || p[3].dim() != 2 || p[3].size(0) != E)
    return false;
  const auto padded = [](int64_t c) { return (c + kPanPad - 1) / kPanPad * kPanPad; };
  const int64_t R = p[3].size(1), NB = p[2].size(0);
  return NB == R + 32 && panels[0].dim() == 2 && panels[0].size(0) == E && panels[0].size(1) == padded(NB) &&
         panels[1].dim() == 2 && panels[1].size(0) == R && panels[1].size(1) == padded(E);
#else
  (void)xz, (void)p, (void)panels;
  return false;
#endif
}

void raw_branch(const float* xz, int64_t L, int64_t E, at::TensorList p, at::TensorList panels, bool reverse,
                const int64_t* rows, int64_t n, float* y, bool accumulate, bool stub_scan) {
#if DYVM_LANES && DYVM_CONV16
  if (n == 0 || L == 0) return;
  const int64_t R = p[3].size(1), NB = p[2].size(0), N = 16, steps = n * L;
  // uninitialised and 64-byte aligned (a zero-filled vector would cost a pass over ~40 MB at Vim-T's batch 64)
  const at::Tensor scratch = at::empty({steps * (2 * E + NB)}, p[5].options());
  float* u = scratch.data_ptr<float>();  // conv + SiLU (n, L, E)
  float* delta = u + steps * E;     // dt_proj's output (n, L, E)
  float* xdbl = delta + steps * E;  // x_proj's output (n, L, R + 2N): dt, B, C
  ConvArgs<float> c;
  c.x = xz;
  c.sb = L * 2 * E;
  c.se = 1;
  c.sl = 2 * E;
  c.m = nullptr;
  c.msb = c.msl = 0;
  c.w = p[0].data_ptr<float>();
  c.bias = p[1].data_ptr<float>();
  c.batch = n;
  c.E = E;
  c.L = L;
  c.K = 4;
  c.silu = true;
  c.reverse = reverse;
  c.rows = rows;
  const std::vector<float> taps = taps_by_k(c.w, E, 4);
  run_conv_cl16(c, StridedOut<float>{u, L * E, 1, E}, taps.data(), n);
  panel_matmul(u, steps, E, E, panels[0].data_ptr<float>(), NB, xdbl, NB);
  panel_matmul(xdbl, steps, R, NB, panels[1].data_ptr<float>(), E, delta, E);
  if (stub_scan) {  // the matmul floor's stub: the scan returns u (added like the scan's output)
    for (int64_t i = 0; i < n; ++i) {
      float* dst = y + (rows ? rows[i] : i) * L * E;
      const float* src = u + i * L * E;
      if (accumulate) {
        for (int64_t k = 0; k < L * E; ++k) dst[k] += src[k];
      } else {
        std::memcpy(dst, src, sizeof(float) * L * E);
      }
    }
    return;
  }
  Args<float> a;
  a.u = {u, L * E, 1, E};
  a.delta = {delta, L * E, 1, E};
  a.z = {xz + E, L * 2 * E, 1, 2 * E};
  a.A = p[5].data_ptr<float>();
  a.Bm = xdbl + R;
  a.Cm = xdbl + R + N;
  a.sBb = a.sCb = L * NB;
  a.sBl = a.sCl = NB;
  a.D = p[6].data_ptr<float>();
  a.bias = p[4].data_ptr<float>();
  a.batch = n;
  a.E = E;
  a.L = L;
  a.N = N;
  a.softplus = true;
  a.reverse = reverse;
  a.zrows = rows;
  a.orows = rows;
  a.accumulate = accumulate;
  const StridedOut<float> o{y, L * E, 1, E};
  at::parallel_for(0, n * (E / 16), scan_forward_grain(L, true),
                   [&](int64_t k0, int64_t k1) { forward_lanes16(a, o, k0, k1); });
#else
  (void)xz, (void)L, (void)E, (void)p, (void)panels, (void)reverse, (void)rows, (void)n, (void)y, (void)accumulate,
      (void)stub_scan;
#endif
}

// One SSM direction at inference: x, z (B, E, L) views of in_proj's output → y (B, E, L) on
// channel-last memory. params: conv weight (E, 1, K) or (E, K), conv bias (E), x_proj weight
// (R+2N, E), dt_proj weight (E, R), dt_proj bias (E), A = -exp(A_log) (E, N), D (E). The same calls as the
// Python mixer (conv + SiLU, two matmuls, scan), without a Python round trip between them.
// rows (n,) int64 (a sub-batch; undefined: every image): the branch runs on those images only, y is (n, E, L),
// and the conv and the scan read their images of x and z in place (or, where their fast paths do not serve,
// from copies: the values are the same as for copies of those rows either way). acc (B, E, L), if given: y is
// added into it at those images (in the scan's stores where its fast path serves) and nothing is returned.
// stub_scan (benchmarks' matmul floor only): the scan returns u, as the Python benchmarks' stub does.
// panels: empty, or x_proj's and dt_proj's weight panels (weight_panel; float32 inference, under CPU autocast too):
// the two matmuls then run as panel_linear in float32, as the Python mixer's do.
at::Tensor mixer_branch(const at::Tensor& x, const at::Tensor& z, at::TensorList p, bool reverse, bool stub_scan,
                        at::TensorList panels, const at::Tensor& rows = at::Tensor(), at::Tensor* acc = nullptr) {
  TORCH_CHECK(p.size() == 7, "mix_forward: 7 tensors per direction (conv weight, conv bias, x_proj weight, "
              "dt_proj weight, dt_proj bias, A, D)");
  const int64_t Bsz = rows.defined() ? rows.numel() : x.size(0), E = x.size(1), L = x.size(2);
  const at::Tensor& A = p[5];
  const int64_t N = A.size(1), R = p[3].size(1);
  const at::Tensor w = (p[0].dim() == 3 ? p[0].reshape({p[0].size(0), p[0].size(2)}) : p[0]).contiguous();
  const at::Tensor u = rows.defined() ? conv_forward_rows(x, w, p[1], reverse, rows)
                                      : conv_forward(x, w, p[1], true, c10::nullopt, reverse, true);
  TORCH_CHECK(panels.empty() || panels.size() == 2, "mix_forward: panels must be empty or 2 per direction");
  const at::Tensor ut = u.transpose(1, 2).reshape({Bsz * L, E});
  // the panels (float32, under CPU autocast too) run panel_linear; without them at::mm (in 16 bits under autocast)
  const auto project = [&](const at::Tensor& in, const at::Tensor& weight, size_t i, int64_t out) {
    return panels.empty() ? at::mm(in, weight.t()) : panel_linear(in, panels[i], out);
  };
  const at::Tensor xdbl = project(ut, p[2], 0, R + 2 * N);  // (B*L, R+2N)
  const at::Tensor dt = xdbl.narrow(1, 0, R);
  const at::Tensor delta = project(dt, p[3], 1, E).view({Bsz, L, E}).transpose(1, 2);
  const at::Tensor bc = xdbl.view({Bsz, L, R + 2 * N});
  if (stub_scan) return add_rows(acc, rows, u);
  // where the two matmuls ran in 16 bits (autocast without panels): the scan reads float32 copies, as the Python
  // dispatch does
  const auto f32 = [](const at::Tensor& t) { return t.scalar_type() == at::kFloat ? t : t.to(at::kFloat); };
  const at::Tensor Bm = f32(bc.narrow(2, R, N)), Cm = f32(bc.narrow(2, R + N, N));
  return scan_forward_rows(u, f32(delta), A, Bm, Cm, p[6], z, p[4], reverse, rows, acc);
}

// The DyVM router's head at inference: logits (B, 2) = input (B, C) · weight (2, C)^T + bias in float32 plain loops
// (the input upcast when 16-bit), gates = sigmoid(logits) > threshold as 0/1. Both this extension's blocks and the
// Python router at inference call it (identical values): as an ATen linear it cost ~40 µs a layer at batch 1.
std::vector<at::Tensor> router_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                       double threshold) {
  TORCH_CHECK(input.dim() == 2 && input.device().is_cpu() && at::isFloatingType(input.scalar_type()),
              "router_forward: input must be a (B, C) floating-point CPU tensor");
  const int64_t Bsz = input.size(0), C = input.size(1);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == 2 && weight.size(1) == C && weight.scalar_type() == at::kFloat &&
              weight.is_contiguous() && bias.numel() == 2 && bias.scalar_type() == at::kFloat && bias.is_contiguous(),
              "router_forward: weight must be a contiguous float32 (2, C) tensor and bias (2,)");
  const at::Tensor x = (input.scalar_type() == at::kFloat ? input : input.to(at::kFloat)).contiguous();
  at::Tensor logits = at::empty({Bsz, 2}, x.options()), gates = at::empty({Bsz, 2}, x.options());
  const float *xp = x.data_ptr<float>(), *w = weight.data_ptr<float>(), *bp = bias.data_ptr<float>();
  float *lp = logits.data_ptr<float>(), *gp = gates.data_ptr<float>();
  const float thr = static_cast<float>(threshold);
  for (int64_t b = 0; b < Bsz; ++b)
    for (int64_t j = 0; j < 2; ++j) {
      const float* xr = xp + b * C;
      const float* wr = w + j * C;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) sum += xr[c] * wr[c];
      const float l = sum + bp[j];
      lp[b * 2 + j] = l;
      gp[b * 2 + j] = 1.0f / (1.0f + std::exp(-l)) > thr ? 1.0f : 0.0f;
    }
  return {logits, gates};
}

// The DyVM router at inference: router_forward on xz at the prefix positions (averaged when there are several),
// xz as it came (16 bits under autocast), read as the Python router reads it.
std::vector<at::Tensor> route(const at::Tensor& xz, at::TensorList router, double threshold) {
  TORCH_CHECK(router.size() == 3, "mix_forward: router must be [block_head weight, block_head bias, positions]");
  const at::Tensor& pos = router[2];
  TORCH_CHECK(pos.dim() == 1 && pos.numel() >= 1 && pos.scalar_type() == at::kLong && pos.device().is_cpu() &&
              pos.is_contiguous(), "mix_forward: the router positions must be a non-empty 1-D int64 CPU tensor");
  const at::Tensor input = pos.numel() == 1 ? xz.select(1, pos.data_ptr<int64_t>()[0]) : xz.index_select(1, pos).mean(1);
  return router_forward(input, router[0], router[1], threshold);
}

// Whether a fused block's two SSM branches run side by side, one per thread, instead of one after the other with each
// of their kernels (conv, two panels, scan) split between the threads: with two or more threads, outside a parallel
// region, for blocks of at most DYVM_DIRECTIONS_MAX (B L E) values, where a split kernel's synchronisation costs
// about as much as its half of the work (the demo's blocks at batch 1). Both give the same values.
bool directions_in_parallel(int64_t values) {
  static const int64_t max_values = [] {
    const char* v = std::getenv("DYVM_DIRECTIONS_MAX");
    return v ? std::atoll(v) : int64_t{1} << 14;
  }();
  return values <= max_values && at::get_num_threads() >= 2 && !at::in_parallel_region();
}

// The bidirectional mixer after in_proj at inference: xz (B, L, 2E) float32 → [(B, L, D) =
// (y_f + y_b) (out_weight · out_scale)^T], or with a router [output, router logits, gates]. gates (B, 2)
// 0/1 [forward, backward] (from the router, else given, else both on): a direction on for every image
// runs on the whole batch, one on for some runs on that sub-batch (its rows of xz read in place where the
// kernels' fast paths serve, else copied) and is added into y by rows, one off for all does not run (the Python
// mixer's `_selected_branches`, call for call, the same values). Both directions on for every image of a small block
// (directions_in_parallel): the two run side by side, one per thread.
std::vector<at::Tensor> mix_forward(const at::Tensor& xz, at::TensorList forward_params,
                                    at::TensorList backward_params, const at::Tensor& out_weight, double out_scale,
                                    const c10::optional<at::Tensor>& gates, at::TensorList router,
                                    double router_threshold, bool stub_scan,
                                    const c10::optional<at::Tensor>& out_packed, at::TensorList panels) {
  const at::AutoDispatchBelowADInplaceOrView inference_calls;  // see "Inference calls below autograd"
  TORCH_CHECK(panels.empty() || panels.size() == 4 || panels.size() == 6,
              "mix_forward: panels must be empty or [x_proj, dt_proj] panels of the forward then the backward branch "
              "(+ in_proj's and out_proj's)");
  TORCH_CHECK(xz.dim() == 3 && xz.size(2) % 2 == 0 && at::isFloatingType(xz.scalar_type()) &&
              xz.scalar_type() != at::kDouble && xz.device().is_cpu(),
              "mix_forward: xz must be a (B, L, 2E) float32 (or, under autocast, 16-bit) CPU tensor");
  const int64_t Bsz = xz.size(0), L = xz.size(1), E = xz.size(2) / 2;
  TORCH_CHECK(out_weight.dim() == 2 && out_weight.size(1) == E, "mix_forward: out_weight must be (D, E)");
  TORCH_CHECK(router.empty() || !gates, "mix_forward: give gates or a router, not both");
  std::vector<at::Tensor> routed = router.empty() ? std::vector<at::Tensor>{} : route(xz, router, router_threshold);
  const c10::optional<at::Tensor> gate_source = routed.empty() ? gates : c10::optional<at::Tensor>(routed[1]);
  at::Tensor g;
  if (gate_source) {
    TORCH_CHECK(gate_source->dim() == 2 && gate_source->size(0) == Bsz && gate_source->size(1) == 2 &&
                gate_source->device().is_cpu(), "mix_forward: gates must be (B, 2) on the CPU");
    g = gate_source->to(at::kFloat).contiguous();
  }
  const auto halves = [&](const at::Tensor& t) {
    return std::make_pair(t.narrow(2, 0, E).transpose(1, 2), t.narrow(2, E, E).transpose(1, 2));
  };
  // the router read xz as it came (16 bits under autocast, like the Python router); the branches read it
  // in float32 (the Python mixer upcasts it once)
  const at::Tensor xzf = xz.scalar_type() == at::kFloat ? xz : xz.to(at::kFloat);
  at::Tensor y;
  // every fast kernel in both directions: raw_branch on the float32 xz's memory (under autocast the copy the
  // branches read anyway), y (B, L, E) viewed as (B, E, L)
  const bool raw = panels.size() >= 4 && raw_branch_applies(xzf, forward_params, panels.slice(0, 2)) &&
                   raw_branch_applies(xzf, backward_params, panels.slice(2, 2));
  const auto xz_views = raw ? std::make_pair(at::Tensor(), at::Tensor()) : halves(xzf);
  at::Tensor y_rows;  // raw: y's (B, L, E) memory
  bool all_on = true;  // both directions on for every image
  if (g.defined()) {
    const float* gp = g.data_ptr<float>();
    for (int64_t i = 0; i < 2 * Bsz; ++i) all_on = all_on && gp[i] > 0.5f;
  }
  const bool side_by_side = raw && all_on && directions_in_parallel(Bsz * L * E);
  if (side_by_side) {
    // one direction per thread; the backward branch writes a buffer of its own, added after (the values of adding in
    // the scan's stores: each output is rounded before the sum)
    y_rows = at::empty({Bsz, L, E}, xzf.options());
    const at::Tensor y_back = at::empty({Bsz, L, E}, xzf.options());
    at::parallel_for(0, 2, 1, [&](int64_t d0, int64_t d1) {
      for (int64_t d = d0; d < d1; ++d)
        raw_branch(xzf.data_ptr<float>(), L, E, d == 0 ? forward_params : backward_params, panels.slice(2 * d, 2),
                   d == 1, nullptr, Bsz, (d == 0 ? y_rows : y_back).data_ptr<float>(), false, stub_scan);
    });
    float* yp = y_rows.data_ptr<float>();
    const float* bp = y_back.data_ptr<float>();
    for (int64_t i = 0, n = Bsz * L * E; i < n; ++i) yp[i] += bp[i];
  }
  for (int d = 0; d < 2 && !side_by_side; ++d) {
    at::TensorList p = d == 0 ? forward_params : backward_params;
    const at::TensorList pan = panels.empty() ? panels : panels.slice(2 * d, 2);  // this branch's x_proj, dt_proj
    std::vector<int64_t> on;
    if (g.defined()) {
      const float* gp = g.data_ptr<float>();
      for (int64_t b = 0; b < Bsz; ++b)
        if (gp[b * 2 + d] > 0.5f) on.push_back(b);
    }
    const int64_t n_on = g.defined() ? static_cast<int64_t>(on.size()) : Bsz;
    if (n_on == 0) continue;
    if (raw) {
      const bool sub = n_on < Bsz, first = !y_rows.defined();
      if (first) y_rows = sub ? at::zeros({Bsz, L, E}, xzf.options()) : at::empty({Bsz, L, E}, xzf.options());
      raw_branch(xzf.data_ptr<float>(), L, E, p, pan, d == 1, sub ? on.data() : nullptr, n_on,
                 y_rows.data_ptr<float>(), sub || !first, stub_scan);
      continue;
    }
    at::Tensor idx;  // the sub-batch, or undefined: every image
    if (n_on < Bsz) {
      idx = at::empty({n_on}, xz.options().dtype(at::kLong));
      std::copy(on.begin(), on.end(), idx.data_ptr<int64_t>());
    }
    if (!y.defined() && !idx.defined()) {
      y = mixer_branch(xz_views.first, xz_views.second, p, d == 1, stub_scan, pan);
      continue;
    }
    if (!y.defined()) y = at::zeros({Bsz, L, E}, xzf.options()).transpose(1, 2);
    mixer_branch(xz_views.first, xz_views.second, p, d == 1, stub_scan, pan, idx, &y);  // y += this branch's output
  }
  if (y_rows.defined()) y = y_rows.transpose(1, 2);
  if (!y.defined()) y = at::zeros({Bsz, L, E}, xzf.options()).transpose(1, 2);
  // out_scale (a power of two: 0.5 for the official (y_f + y_b) / 2) scales the smaller of the weight and the output,
  // the same values either way; a scaled copy of a large weight costs a fresh allocation per layer at batch 1
  const at::Tensor yt = y_rows.defined() ? y_rows.view({Bsz * L, E}) : y.transpose(1, 2).reshape({Bsz * L, E});
  const bool packed = uses_packed(yt, out_weight, out_packed);
  const c10::optional<at::Tensor> out_panel =
      panels.size() == 6 ? c10::optional<at::Tensor>(panels[5]) : c10::optional<at::Tensor>();
  const bool panel = !packed && uses_panel(yt, out_weight, out_panel);
  const bool scale_output = out_scale != 1.0 && (packed || panel || Bsz * L < out_weight.size(1));
  if (raw && panel && yt.is_contiguous() && out_panel->is_contiguous()) {  // panel_linear and mul_ on raw pointers
    const int64_t D = out_weight.size(0);
    at::Tensor out = at::empty({Bsz, L, D}, xzf.options());
    float* op = out.data_ptr<float>();
    panel_matmul(yt.data_ptr<float>(), Bsz * L, E, E, out_panel->data_ptr<float>(), D, op, D);
    const float scale = static_cast<float>(out_scale);  // what mul_ multiplies by
    if (scale_output)
      for (int64_t i = 0, n = Bsz * L * D; i < n; ++i) op[i] *= scale;
    if (routed.empty()) return {out};
    return {out, routed[0], routed[1]};
  }
  const at::Tensor w = out_scale == 1.0 || scale_output ? out_weight : out_weight.mul(out_scale);
  at::Tensor out = (packed ? packed_mm(yt, *out_packed)
                           : panel ? panel_linear(yt, *out_panel, out_weight.size(0)) : at::mm(yt, w.t()))
                       .view({Bsz, L, out_weight.size(0)});
  if (scale_output) out.mul_(out_scale);
  if (routed.empty()) return {out};
  return {out, routed[0], routed[1]};
}

// ------------------------------ residual add and RMSNorm at inference, one pass ------------------------------
// As ATen calls (add, square, mean, add eps, rsqrt, two muls: ~8 calls with the mean's own) RMSNorm cost 10-15 µs a
// layer at the demo's batch 1, more than its arithmetic. Here one pass per row: res = residual + hidden (or hidden
// alone), then out = res * (1 / sqrt(sum(res^2) / D + eps)) * weight, the factors in the Python order. The mean square
// is summed in double, in 16 partial sums (element i into sum i mod 16) added in a fixed order, so a row's values
// depend neither on the batch nor on the threads. Block.add_norm and RMSNorm call the same op at inference (dyvm_scan::add_rms_norm), so fused
// blocks and the Python path give identical values; against ATen's reduction they differ by float rounding.
void add_rms_norm_rows(const float* hidden, const float* residual, const float* weight, float eps, int64_t D,
                       int64_t r0, int64_t r1, float* res_out, float* out) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* h = hidden + r * D;
    float* res = res_out ? res_out + r * D : nullptr;
    const float* x = h;
    if (residual) {  // res = residual + hidden: the one float32 add ATen's add does, element by element
      const float* q = residual + r * D;
      for (int64_t i = 0; i < D; ++i) res[i] = q[i] + h[i];
      x = res;
    } else if (res) {
      std::memcpy(res, h, sizeof(float) * D);
    }
    double part[16] = {};  // in double: the mean square to ~1e-16, so the norm's only float32 roundings are the products
    int64_t i = 0;
    for (; i + 16 <= D; i += 16) {
      for (int j = 0; j < 16; ++j) part[j] += static_cast<double>(x[i + j]) * x[i + j];
    }
    for (int j = 0; i < D; ++i, ++j) part[j] += static_cast<double>(x[i]) * x[i];
    double ss = 0.0;
    for (int j = 0; j < 16; ++j) ss += part[j];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + static_cast<double>(eps)));
    float* o = out + r * D;
    for (int64_t k = 0; k < D; ++k) o[k] = x[k] * scale * weight[k];
  }
}

// hidden (..., D) float32 (or 16-bit: converted first), residual None or float32 like hidden, weight (D) float32 →
// [RMSNorm(res) (..., D) float32, res] where res = residual + hidden, or hidden (float32) when residual is None.
std::vector<at::Tensor> add_rms_norm(const at::Tensor& hidden, const c10::optional<at::Tensor>& residual,
                                     const at::Tensor& weight, double eps) {
  TORCH_CHECK(hidden.dim() >= 1 && at::isFloatingType(hidden.scalar_type()) && hidden.scalar_type() != at::kDouble &&
                  hidden.device().is_cpu(),
              "add_rms_norm: hidden must be a (..., D) float32 (or 16-bit) CPU tensor");
  const int64_t D = hidden.size(-1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == D && weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
              "add_rms_norm: weight must be a float32 CPU tensor of hidden's last size");
  TORCH_CHECK(!residual || (residual->sizes() == hidden.sizes() && residual->scalar_type() == at::kFloat &&
                            residual->device().is_cpu()),
              "add_rms_norm: residual must be a float32 CPU tensor shaped like hidden");
  const at::Tensor h = hidden.to(at::kFloat).contiguous();
  const at::Tensor q = residual ? residual->contiguous() : at::Tensor();
  const at::Tensor w = weight.contiguous();
  at::Tensor res = residual ? at::empty_like(h) : h;
  at::Tensor out = at::empty_like(h);
  const int64_t rows = D > 0 ? h.numel() / D : 0;
  const float* hp = h.data_ptr<float>();
  const float* qp = residual ? q.data_ptr<float>() : nullptr;
  float* rp = residual ? res.data_ptr<float>() : nullptr;
  const float* wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  // small tensors in one thread: a parallel region costs more than the work below ~64 K elements
  at::parallel_for(0, rows, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(D, 1)),
                   [&](int64_t r0, int64_t r1) { add_rms_norm_rows(hp, qp, wp, e, D, r0, r1, rp, op); });
  return {out, res};
}

// add_rms_norm's backward, for training (norm.add_rms_norm_for_training's node): grad_out (..., D) of the normed
// output, res (..., D) float32 (the norm's input, residual + hidden), weight (D) float32, grad_res (res's own
// gradient, from the next block's add) or None → [d_res (..., D) = rstd (g w - x̂ Σ g w x̂ / D) + grad_res,
// d_weight (D) = Σ g x̂] with x̂ = res rstd and rstd recomputed per row as the forward computes it. One pass per row;
// d_weight summed per thread chunk of rows, then over the chunks.
std::vector<at::Tensor> rms_norm_backward(const at::Tensor& grad_out, const at::Tensor& res, const at::Tensor& weight,
                                          double eps, const c10::optional<at::Tensor>& grad_res) {
  TORCH_CHECK(res.dim() >= 1 && res.scalar_type() == at::kFloat && res.device().is_cpu(),
              "rms_norm_backward: res must be a (..., D) float32 CPU tensor");
  const int64_t D = res.size(-1);
  TORCH_CHECK(grad_out.sizes() == res.sizes() && at::isFloatingType(grad_out.scalar_type()) &&
                  grad_out.device().is_cpu(), "rms_norm_backward: grad_out must be a CPU tensor shaped like res");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == D && weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
              "rms_norm_backward: weight must be a float32 CPU tensor of res's last size");
  TORCH_CHECK(!grad_res || (grad_res->sizes() == res.sizes() && grad_res->device().is_cpu() &&
                            at::isFloatingType(grad_res->scalar_type())),
              "rms_norm_backward: grad_res must be a CPU tensor shaped like res");
  const at::Tensor g = grad_out.to(at::kFloat).contiguous(), x = res.contiguous(), w = weight.contiguous();
  const at::Tensor gr = grad_res ? grad_res->to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor dres = at::empty_like(x);
  const int64_t rows = D > 0 ? x.numel() / D : 0;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, at::get_num_threads()));
  at::Tensor dwp = at::zeros({chunks, D}, x.options());
  const float *gp = g.data_ptr<float>(), *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  const float* grp = grad_res ? gr.data_ptr<float>() : nullptr;
  float *dp = dres.data_ptr<float>(), *dwpp = dwp.data_ptr<float>();
  const double e = static_cast<double>(static_cast<float>(eps));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> xh(static_cast<size_t>(D));
    for (int64_t c = c0; c < c1; ++c) {
      float* dw = dwpp + c * D;
      for (int64_t r = c * rows / chunks; r < (c + 1) * rows / chunks; ++r) {
        const float *xr = xp + r * D, *gr_ = gp + r * D;
        double part[16] = {};  // the forward's mean square (add_rms_norm_rows), so rstd is the forward's
        int64_t i = 0;
        for (; i + 16 <= D; i += 16)
          for (int j = 0; j < 16; ++j) part[j] += static_cast<double>(xr[i + j]) * xr[i + j];
        for (int j = 0; i < D; ++i, ++j) part[j] += static_cast<double>(xr[i]) * xr[i];
        double ss = 0.0;
        for (int j = 0; j < 16; ++j) ss += part[j];
        const float rstd = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + e));
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t k = 0; k < D; ++k) {
          xh[k] = xr[k] * rstd;
          dot += gr_[k] * wp[k] * xh[k];
        }
        const float m = dot / static_cast<float>(D);
        float* dr = dp + r * D;
        const float* q = grp ? grp + r * D : nullptr;
#pragma omp simd
        for (int64_t k = 0; k < D; ++k) {
          const float v = rstd * (gr_[k] * wp[k] - xh[k] * m);
          dr[k] = q ? v + q[k] : v;
          dw[k] += gr_[k] * xh[k];
        }
      }
    }
  });
  return {dres, chunk_total(dwp)};
}

// A Linear's weight gradient in training, grad (M, out)^T · input (M, in) → (out, in): the M rows split across the
// threads, each thread's product on one thread (MKL runs single-threaded inside a parallel region), the partials
// summed in thread order. MKL's own threading splits the small (out, in) result instead, each thread reading all M
// rows of both operands; at the demo's shapes (M = 6400; in_proj's, out_proj's and x_proj's weights) the split takes
// 0.76-1.02x the time alone and the Vim step 0.95x (docs/speed/log.md "The training step's work split by images and
// rows"). At most one part per thread and per 1024 rows; under 2048 rows (or not float32): one at::mm.
at::Tensor weight_grad(const at::Tensor& grad, const at::Tensor& input) {
  TORCH_CHECK(grad.dim() == 2 && input.dim() == 2 && grad.size(0) == input.size(0),
              "weight_grad: grad (M, out) and input (M, in) must be 2-D with the same rows");
  TORCH_CHECK(grad.scalar_type() == input.scalar_type(), "weight_grad: grad and input must share a dtype");
  const int64_t M = grad.size(0);
  const int64_t chunks = std::min<int64_t>(at::get_num_threads(), M / 1024);
  if (chunks < 2 || grad.scalar_type() != at::kFloat) return at::mm(grad.t(), input);
  at::Tensor part = at::empty({chunks, grad.size(1), input.size(1)}, grad.options());
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    const at::AutoDispatchBelowADInplaceOrView below;  // operands that require grad (saved activations): plain mm
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t m0 = c * M / chunks, m1 = (c + 1) * M / chunks;
      at::Tensor out = part[c];
      at::mm_out(out, grad.slice(0, m0, m1).t(), input.slice(0, m0, m1));
    }
  });
  return small_chunk_total(part);
}

// One SSM direction's terms of the class-token influence (BiMambaMixer.token_influence, keep guidance in
// training), everything between the mixer's SSM inputs and its gate in one pass per image:
//   Δ = softplus(delta + dt_bias), the path decay from token j to `position` (the forward scan: j <= position,
//   span = Σ_{s=j+1..position} Δ_s; the backward one: j >= position, span = Σ_{s=position..j-1} Δ_s), and
//   out[b, j, e] = Δ[b, j, e] u[b, j, e] Σ_n c[b, position, n] b[b, j, n] exp(A[e, n] span[b, j, e]),
//   0 where j does not reach `position`.
// u, delta (B, L, E), dt_bias (E), A (E, N), B, C (B, L, N), float32 → (B, L, E). Only the reaching half of the
// sequence is computed (the composed PyTorch ops computed every j, then masked).
at::Tensor influence_terms(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& dt_bias,
                           const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, int64_t position,
                           bool backward) {
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes() && a.dim() == 2 && b.dim() == 3 && c.sizes() == b.sizes(),
              "influence_terms: u, delta (B, L, E), A (E, N), B and C (B, L, N)");
  for (const at::Tensor* t : {&u, &delta, &dt_bias, &a, &b, &c})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(), "influence_terms: float32 CPU tensors");
  const at::AutoDispatchBelowADInplaceOrView below;
  const int64_t B = u.size(0), L = u.size(1), E = u.size(2), N = a.size(1);
  TORCH_CHECK(a.size(0) == E && dt_bias.numel() == E && b.size(0) == B && b.size(1) == L && b.size(2) == N,
              "influence_terms: sizes disagree");
  TORCH_CHECK(position >= 0 && position < L, "influence_terms: position outside the sequence");
  const at::Tensor uc = u.contiguous(), dc = delta.contiguous(), bc = b.contiguous(), cc = c.contiguous();
  const at::Tensor at_ = a.t().contiguous();  // (N, E)
  std::vector<float> a2(N * E);                // A log2(e): exp(x) = 2^(x log2 e), as exp2_f
  const float* ap = at_.data_ptr<float>();
  for (int64_t k = 0; k < N * E; ++k) a2[k] = ap[k] * 1.44269504088896341f;
  const at::Tensor bias = dt_bias.contiguous();
  const float* __restrict__ biasp = bias.data_ptr<float>();
  at::Tensor out = at::zeros({B, L, E}, u.options());
  const float* __restrict__ up = uc.data_ptr<float>();
  const float* __restrict__ dp = dc.data_ptr<float>();
  const float* __restrict__ bp = bc.data_ptr<float>();
  const float* __restrict__ cp = cc.data_ptr<float>();
  float* __restrict__ op = out.data_ptr<float>();
  const int64_t first = backward ? position : 0, last = backward ? L - 1 : position;  // the tokens that reach it
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> soft(L * E), cum(L * E), span(E), cb(N);
    for (int64_t bi = b0; bi < b1; ++bi) {
      const float* __restrict__ ub = up + bi * L * E;
      const float* __restrict__ db = dp + bi * L * E;
      const float* __restrict__ cpos = cp + (bi * L + position) * N;
      float* __restrict__ ob = op + bi * L * E;
      // Δ = softplus(delta + bias) and its running sum over the sequence (rows of channels, vectorised)
      float* __restrict__ sf = soft.data();
      float* __restrict__ cu = cum.data();
      for (int64_t l = 0; l < L; ++l) {
        const float* __restrict__ drow = db + l * E;
        float* __restrict__ srow = sf + l * E;
        float* __restrict__ crow = cu + l * E;
#pragma omp simd
        for (int64_t e = 0; e < E; ++e) srow[e] = softplus_f(drow[e] + biasp[e]);
        if (l == 0) {
          for (int64_t e = 0; e < E; ++e) crow[e] = srow[e];
        } else {
          const float* __restrict__ prev = cu + (l - 1) * E;
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) crow[e] = prev[e] + srow[e];
        }
      }
      for (int64_t l = first; l <= last; ++l) {
        const float* __restrict__ cl = cu + l * E;
        const float* __restrict__ cpo = cu + position * E;
        const float* __restrict__ sl = sf + l * E;
        const float* __restrict__ spo = sf + position * E;
        float* __restrict__ spn = span.data();
        if (backward) {  // Σ Δ over position .. l-1 = cum[l-1] - cum[position-1]
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) {
            const float v = (cl[e] - sl[e]) - (cpo[e] - spo[e]);
            spn[e] = v > 0.0f ? v : 0.0f;
          }
        } else {         // Σ Δ over l+1 .. position = cum[position] - cum[l]
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) {
            const float v = cpo[e] - cl[e];
            spn[e] = v > 0.0f ? v : 0.0f;
          }
        }
        const float* __restrict__ brow = bp + (bi * L + l) * N;
        for (int64_t n = 0; n < N; ++n) cb[n] = cpos[n] * brow[n];
        float* __restrict__ o = ob + l * E;
        for (int64_t n = 0; n < N; ++n) {
          const float cn = cb[n];
          const float* __restrict__ an = a2.data() + n * E;
          const float* __restrict__ sp = span.data();
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) o[e] += cn * exp2_f(an[e] * sp[e]);
        }
        const float* __restrict__ ul = ub + l * E;
#pragma omp simd
        for (int64_t e = 0; e < E; ++e) o[e] *= sl[e] * ul[e];
      }
    }
  });
  return out;
}

// A whole block at inference: Block.add_norm (residual' = residual + hidden, or hidden itself at layer 0;
// RMSNorm in float32), in_proj, then mix_forward, the Python calls one for one. hidden, residual (B, L, D)
// float32 → [output (B, L, D), residual'] (+ [router logits, gates] with a router).
std::vector<at::Tensor> block_forward(const at::Tensor& hidden, const c10::optional<at::Tensor>& residual,
                                      const at::Tensor& norm_weight, double eps, const at::Tensor& in_weight,
                                      at::TensorList forward_params, at::TensorList backward_params,
                                      const at::Tensor& out_weight, double out_scale,
                                      const c10::optional<at::Tensor>& gates, at::TensorList router,
                                      double router_threshold, bool stub_scan,
                                      const c10::optional<at::Tensor>& in_packed,
                                      const c10::optional<at::Tensor>& out_packed, at::TensorList panels) {
  const at::AutoDispatchBelowADInplaceOrView inference_calls;  // see "Inference calls below autograd"
  TORCH_CHECK(hidden.dim() == 3 && at::isFloatingType(hidden.scalar_type()) &&
              hidden.scalar_type() != at::kDouble && hidden.device().is_cpu(),
              "block_forward: hidden must be a (B, L, D) float32 (or, under autocast, 16-bit) CPU tensor");
  TORCH_CHECK(!residual || (residual->sizes() == hidden.sizes() && residual->scalar_type() == at::kFloat),
              "block_forward: residual must be a float32 tensor shaped like hidden");
  // the residual stream is float32 (at layer 0 it starts as the embeddings)
  const std::vector<at::Tensor> added = add_rms_norm(hidden, residual, norm_weight, eps);
  const at::Tensor& normed = added[0];
  const at::Tensor& res = added[1];
  TORCH_CHECK(panels.empty() || panels.size() == 4 || panels.size() == 6,
              "block_forward: panels must be empty, or 4 (x_proj, dt_proj of both branches) or 6 (+ in_proj, out_proj)");
  const c10::optional<at::Tensor> in_panel =
      panels.size() == 6 ? c10::optional<at::Tensor>(panels[4]) : c10::optional<at::Tensor>();
  std::vector<at::Tensor> out = mix_forward(inference_linear(normed, in_weight, in_packed, in_panel), forward_params,
                                            backward_params, out_weight, out_scale, gates, router, router_threshold,
                                            stub_scan, out_packed, panels);
  out.insert(out.begin() + 1, res);
  return out;
}

// ---------------------------------- the token predictor (inference) ----------------------------------
// At inference a pruning stage's predictor is a few tiny matmuls per token; as ATen calls (a LayerNorm, four
// Linears, three GELUs, the pooling and a log-softmax: ~20 calls) it cost ~0.3 ms a stage at the demo's batch 1,
// where each GELU alone paid oneDNN's ~20 µs per-call setup. Here it is one pass in plain loops, used by both
// the pruning stage below and the Python TokenPredictor at inference (so the two give identical values).

// GELU, erf form: 0.5 x (1 + erf(x / √2)), erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7; the approximation
// oneDNN's gelu_erf uses, which torch's CPU GELU calls for float tensors). For x < 0 the factor 1 + erf(x / √2) =
// erfc(|x| / √2) is computed directly, without cancellation.
DYVM_INLINE float gelu_erf_f(float x) {
  const float z = std::fabs(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.3275911f * z);
  const float q = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float erfc_z = q * exp_f(-z * z);  // erfc(z), z >= 0
  return 0.5f * x * (x < 0.0f ? erfc_z : 2.0f - erfc_z);
}

// y (rows, out) = x (rows, in; row stride ldx) · W^T + bias, then GELU where `gelu`. W (out, in) with row stride ldw.
// bias (out) for every row, or with bias_rows > 0 one bias row per bias_rows rows of x ((rows / bias_rows, out)).
// Blocks of kLinRB rows x 16 outputs accumulate in registers; each output sums its `in` products in order, so the
// values depend neither on the blocking nor on the thread count. From 2^20 multiply-adds (Vim-T's first Linear)
// the BLAS matmul is faster (these loops reach about half its rate), then the bias and GELU run here.
typedef float lin_v16 __attribute__((vector_size(64)));  // GCC/Clang vectors: 16 floats, any target
// A register block: kLinRB rows x 16 outputs, as native vectors (GCC splits a 16-float vector on a 256-bit target
// poorly: it spilled every product). AVX-512: 8 rows of one 16-float register; else 4 rows of two 8-float ones (8
// accumulators), which leaves room in 16 registers for the weights.
#if defined(__AVX512F__)
typedef float lin_vn __attribute__((vector_size(64)));
constexpr int64_t kLinRB = 8;
#else
typedef float lin_vn __attribute__((vector_size(32)));
constexpr int64_t kLinRB = 4;
#endif
constexpr int64_t kLinOB = 16, kLinNV = kLinOB * sizeof(float) / sizeof(lin_vn);

// a[r] (r < kLinRB) = the sum over i, in order, of x[r * ldx + i] * w[i * ldw .. + 16]: each output sums its
// products in input order whatever the block size, so the values do not depend on it.
DYVM_INLINE void linear_block(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t in, lin_v16* a) {
  lin_vn acc[kLinRB][kLinNV] = {};
  for (int64_t i = 0; i < in; ++i, w += ldw) {
    lin_vn wv[kLinNV];
#pragma GCC unroll 2
    for (int64_t k = 0; k < kLinNV; ++k) std::memcpy(&wv[k], w + k * (sizeof(lin_vn) / sizeof(float)), sizeof(lin_vn));
#pragma GCC unroll 8
    for (int64_t r = 0; r < kLinRB; ++r) {
      const float xv = x[r * ldx + i];
#pragma GCC unroll 2
      for (int64_t k = 0; k < kLinNV; ++k) acc[r][k] += xv * wv[k];
    }
  }
  for (int64_t r = 0; r < kLinRB; ++r) std::memcpy(&a[r], acc[r], sizeof(lin_v16));
}

void small_linear(const float* x, int64_t rows, int64_t in, int64_t ldx, const float* W, int64_t ldw, int64_t out,
                  const float* bias, int64_t bias_rows, bool gelu, float* y) {
  if (rows * in * out >= (int64_t{1} << 20)) {  // large (Vim-T's first Linear and up): the BLAS matmul, then the epilogue
    const at::Tensor xt = at::from_blob(const_cast<float*>(x), {rows, in}, {ldx, 1}, at::kFloat);
    const at::Tensor wt = at::from_blob(const_cast<float*>(W), {out, in}, {ldw, 1}, at::kFloat);
    at::Tensor yt = at::from_blob(y, {rows, out}, at::kFloat);
    at::mm_out(yt, xt, wt.t());
    at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, out)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* yr = y + r * out;
        const float* bv = bias ? bias + (bias_rows > 0 ? r / bias_rows * out : 0) : nullptr;
        if (bv) {
#pragma omp simd
          for (int64_t o = 0; o < out; ++o) yr[o] += bv[o];
        }
        if (gelu) {
#pragma omp simd
          for (int64_t o = 0; o < out; ++o) yr[o] = gelu_erf_f(yr[o]);
        }
      }
    });
    return;
  }
  const int64_t outp = (out + kLinOB - 1) / kLinOB * kLinOB;
  std::vector<float> wt(static_cast<size_t>(in * outp), 0.0f);  // W^T, outputs padded to whole blocks
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) wt[i * outp + o] = W[o * ldw + i];
  const int64_t groups = bias_rows > 0 ? (rows + bias_rows - 1) / bias_rows : 1;
  std::vector<float> bp(static_cast<size_t>(groups * outp), 0.0f);  // the bias rows, padded likewise
  if (bias)
    for (int64_t g = 0; g < groups; ++g) std::memcpy(bp.data() + g * outp, bias + g * out, out * sizeof(float));
  const int64_t blocks = (rows + kLinRB - 1) / kLinRB;
  const int64_t grain = std::max<int64_t>(1, 262144 / std::max<int64_t>(1, kLinRB * in * outp));  // fork only for real work
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<float> tail;  // the last block's rows, the spare ones repeating its last row
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t r0 = blk * kLinRB, nr = std::min(kLinRB, rows - r0);
      const float* xb = x + r0 * ldx;
      int64_t ld = ldx;
      if (nr < kLinRB) {
        tail.assign(static_cast<size_t>(kLinRB * in), 0.0f);
        for (int64_t r = 0; r < kLinRB; ++r)
          std::memcpy(tail.data() + r * in, x + (r0 + std::min(r, nr - 1)) * ldx, in * sizeof(float));
        xb = tail.data();
        ld = in;
      }
      for (int64_t o0 = 0; o0 < outp; o0 += kLinOB) {
        lin_v16 a[kLinRB];
        linear_block(xb, ld, wt.data() + o0, outp, in, a);
        const int64_t no = std::min(kLinOB, out - o0);
        for (int64_t r = 0; r < nr; ++r) {
          lin_v16 bv;
          std::memcpy(&bv, bp.data() + (bias_rows > 0 ? (r0 + r) / bias_rows : 0) * outp + o0, sizeof(bv));
          alignas(64) float v[kLinOB];
          const lin_v16 sum = a[r] + bv;
          std::memcpy(v, &sum, sizeof(v));
          if (gelu) {
#pragma omp simd
            for (int64_t o = 0; o < kLinOB; ++o) v[o] = gelu_erf_f(v[o]);
          }
          std::memcpy(y + (r0 + r) * out + o0, v, no * sizeof(float));
        }
      }
    }
  });
}

void check_predictor(at::TensorList p, int64_t D, const char* who) {  // who: the op named in its errors
  TORCH_CHECK(p.size() == 10 || p.size() == 11,
              who, ": predictor must be [norm w, b, in w, b, out w, b x 3] (+ slot bias)");
  const int64_t half = D / 2;
  const std::vector<std::vector<int64_t>> shapes = {{D}, {D}, {D, D}, {D}, {D / 2, D}, {D / 2}, {D / 4, D / 2},
                                                    {D / 4}, {2, D / 4}, {2}};
  for (size_t j = 0; j < 10; ++j)
    TORCH_CHECK(p[j].sizes() == at::IntArrayRef(shapes[j]) && p[j].scalar_type() == at::kFloat && p[j].is_contiguous()
                && p[j].device().is_cpu(), who, ": predictor tensor ", j, " must be a contiguous float32 CPU tensor of ",
                "shape ", at::IntArrayRef(shapes[j]), " for D = ", D);
  TORCH_CHECK(half > 0 && D / 4 > 0, who, ": the predictor needs D >= 4");
  if (p.size() == 11)
    TORCH_CHECK(p[10].dim() == 1 && p[10].scalar_type() == at::kFloat && p[10].is_contiguous(),
                who, ": the slot bias must be a contiguous float32 (S,) tensor");
}

// TokenPredictor.forward at inference (every token live): x (B*N, D) float32 rows (overwritten: LayerNorm in
// place) → logp (B*N, 2) keep / drop log-probabilities. p as check_predictor.
void predictor_rows(float* x, int64_t Bsz, int64_t N, int64_t D, at::TensorList p, double ln_eps, float* logp) {
  const int64_t rows = Bsz * N, half = D / 2, d2 = D / 2, d4 = D / 4;
  if (rows == 0) return;
  const float *lw = p[0].data_ptr<float>(), *lb = p[1].data_ptr<float>();
  const float eps = static_cast<float>(ln_eps);
  // the row loops split over the threads by rows (each row's arithmetic as one thread would do it: the same values
  // for any thread count); a task is ~16k values
  const int64_t row_grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, D));
  at::parallel_for(0, rows, row_grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {  // LayerNorm over D (two passes)
      float* xr = x + r * D;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += xr[d];
      const float mean = s / static_cast<float>(D);
      float v = 0.0f;
#pragma omp simd reduction(+ : v)
      for (int64_t d = 0; d < D; ++d) v += (xr[d] - mean) * (xr[d] - mean);
      const float inv = 1.0f / std::sqrt(v / static_cast<float>(D) + eps);
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) xr[d] = (xr[d] - mean) * inv * lw[d] + lb[d];
    }
  });
  // uninitialised scratch (every element is written before it is read; zero-filling h1 alone was a pass over 1.6 MB
  // at the demo's batch 64)
  const at::Tensor scratch = at::empty({rows * (D + d2 + d4 + 2) + Bsz * d2}, p[0].options());
  float* h1 = scratch.data_ptr<float>();
  float* h2 = h1 + rows * D;
  float* h3 = h2 + rows * d2;
  float* lg = h3 + rows * d4;
  float* gvec = lg + rows * 2;
  std::vector<float> glob(static_cast<size_t>(Bsz * (D - half)), 0.0f);
  small_linear(x, rows, D, D, p[2].data_ptr<float>(), D, D, p[3].data_ptr<float>(), 0, true, h1);
  // the pooled half: the mean over the image's tokens with the official "+ 1", then its product with the first
  // out Linear's right half (and that Linear's bias) once per image (split by images: each sums its tokens in order)
  at::parallel_for(0, Bsz, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, N * D)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* g = glob.data() + b * (D - half);
      for (int64_t n = 0; n < N; ++n) {
        const float* hr = h1 + (b * N + n) * D + half;
#pragma omp simd
        for (int64_t j = 0; j < D - half; ++j) g[j] += hr[j];
      }
      for (int64_t j = 0; j < D - half; ++j) g[j] /= static_cast<float>(N + 1);
    }
  });
  const float* w1 = p[4].data_ptr<float>();
  small_linear(glob.data(), Bsz, D - half, D - half, w1 + half, D, d2, p[5].data_ptr<float>(), 0, false, gvec);
  small_linear(h1, rows, half, D, w1, D, d2, gvec, N, true, h2);
  small_linear(h2, rows, d2, d2, p[6].data_ptr<float>(), d2, d4, p[7].data_ptr<float>(), 0, true, h3);
  small_linear(h3, rows, d4, d4, p[8].data_ptr<float>(), d4, 2, p[9].data_ptr<float>(), 0, false, lg);
  const float* slot = p.size() == 11 ? p[10].data_ptr<float>() : nullptr;
  const int64_t slots = slot ? p[10].size(0) : 0;
  TORCH_CHECK(slots <= N, "the predictor's slot bias must be (S,) with S <= the number of patches");
  at::parallel_for(0, rows, 4096, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float a = lg[2 * r], c = lg[2 * r + 1];
      if (!slot) {  // log_softmax over the two logits
        const float m = std::max(a, c), lse = m + std::log(std::exp(a - m) + std::exp(c - m));
        logp[2 * r] = a - lse;
        logp[2 * r + 1] = c - lse;
      } else {  // the slot prior on the keep-vs-drop logit: [logsigmoid(diff), logsigmoid(-diff)]
        const int64_t n = r % N;
        const float diff = a - c + (n < slots ? slot[n] : 0.0f);
        const float tail = std::log1p(std::exp(-std::fabs(diff)));
        logp[2 * r] = std::min(diff, 0.0f) - tail;
        logp[2 * r + 1] = std::min(-diff, 0.0f) - tail;
      }
    }
  });
}

// The Python TokenPredictor at inference: x (B, N, D) float32 → (B, N, 2), the values prune_stage computes.
at::Tensor predictor_forward(const at::Tensor& x, at::TensorList predictor, double ln_eps) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "predictor_forward: x must be a (B, N, D) float32 CPU tensor");
  const int64_t Bsz = x.size(0), N = x.size(1), D = x.size(2);
  check_predictor(predictor, D, "predictor_forward");
  at::Tensor rows = x.contiguous().clone();
  at::Tensor logp = at::empty({Bsz, N, 2}, x.options());
  predictor_rows(rows.data_ptr<float>(), Bsz, N, D, predictor, ln_eps, logp.data_ptr<float>());
  return logp;
}

// A DyVM pruning stage at inference on a batch whose images all have their P prefix tokens at the same
// positions `prefix`: the predictor reads hidden + residual at the patch slots, each image keeps its `keep`
// best-scoring patches (ascending slot order), and the sequence is rebuilt with the prefix tokens at
// `new_prefix`: TokenPredictor.forward (predictor_rows, which the Python predictor calls at inference too),
// select_keep and TokenSequence.select, with identical values, without a Python round trip. hidden, residual (B, L, D) float32 (or 16-bit hidden under autocast),
// patch_ids (B, N = L - P) int64; predictor: [LayerNorm weight, bias, in Linear weight, bias, then the out
// Linears' weight and bias (D -> D/2, D/2 -> D/4, D/4 -> 2), optional slot bias]. Returns [hidden' (B, keep+P, D),
// residual', patch_ids' (B, keep), kept patch slots (B, keep), keep log-probabilities (B, N, 2)].
std::vector<at::Tensor> prune_stage(const at::Tensor& hidden, const at::Tensor& residual,
                                    const at::Tensor& patch_ids, at::TensorList predictor, double ln_eps,
                                    int64_t keep, at::IntArrayRef prefix, at::IntArrayRef new_prefix) {
  const at::AutoDispatchBelowADInplaceOrView inference_calls;  // see "Inference calls below autograd"
  TORCH_CHECK(hidden.dim() == 3 && hidden.device().is_cpu() && residual.sizes() == hidden.sizes(),
              "prune_stage: hidden and residual must be (B, L, D) CPU tensors of one shape");
  const int64_t Bsz = hidden.size(0), L = hidden.size(1), D = hidden.size(2);
  const int64_t P = static_cast<int64_t>(prefix.size()), N = L - P;
  TORCH_CHECK(static_cast<int64_t>(new_prefix.size()) == P && patch_ids.dim() == 2 && patch_ids.size(0) == Bsz &&
              patch_ids.size(1) == N && patch_ids.scalar_type() == at::kLong,
              "prune_stage: patch_ids must be (B, L - P) int64 and new_prefix must hold P positions");
  TORCH_CHECK(keep >= 1 && keep <= N, "prune_stage: keep must be in [1, number of patches]");
  std::vector<char> is_prefix(L, 0);
  for (int64_t p : prefix) {
    TORCH_CHECK(p >= 0 && p < L && !is_prefix[p], "prune_stage: prefix positions must be distinct and in [0, L)");
    is_prefix[p] = 1;
  }
  std::vector<int64_t> slot_of(keep + P, 0);  // per slot of the new sequence: -1 - i at prefix token i, else 0
  for (int64_t i = 0; i < P; ++i) {
    TORCH_CHECK(new_prefix[i] >= 0 && new_prefix[i] < keep + P && slot_of[new_prefix[i]] == 0,
                "prune_stage: new_prefix positions must be distinct and in [0, keep + P)");
    slot_of[new_prefix[i]] = -1 - i;
  }
  at::Tensor slots = at::empty({N}, patch_ids.options());
  {
    int64_t* s = slots.data_ptr<int64_t>();
    for (int64_t l = 0, j = 0; l < L; ++l)
      if (!is_prefix[l]) s[j++] = l;
  }
  // TokenPredictor.forward on the patch tokens of hidden + residual (predictor_rows)
  check_predictor(predictor, D, "prune_stage");
  TORCH_CHECK(residual.scalar_type() == at::kFloat, "prune_stage: the residual must be float32");
  const at::Tensor hid = (hidden.scalar_type() == at::kFloat ? hidden : hidden.to(at::kFloat)).contiguous();
  const at::Tensor res = residual.contiguous();
  at::Tensor logp = at::empty({Bsz, N, 2}, residual.options());
  {
    // uninitialised (every value is written below), split by images
    const at::Tensor xt = at::empty({Bsz * N * D}, residual.options());
    float* x = xt.data_ptr<float>();
    const float *hp = hid.data_ptr<float>(), *rp = res.data_ptr<float>();
    const int64_t* s = slots.data_ptr<int64_t>();
    at::parallel_for(0, Bsz, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, N * D)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t j = 0; j < N; ++j) {
          const int64_t off = (b * L + s[j]) * D;
          float* xr = x + (b * N + j) * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) xr[d] = hp[off + d] + rp[off + d];
        }
    });
    predictor_rows(x, Bsz, N, D, predictor, ln_eps, logp.data_ptr<float>());
  }
  // select_keep (dyvm.dynamic.top_k_spreading_ties): the slots above the k-th best keep score, then of the T slots
  // that tie with it the r still needed spread evenly over them in slot order (floor(i (T-1) / (r-1))), in slot order
  // (plain loops: the k-th best score by nth_element on a copy of the row, no ATen call per stage)
  at::Tensor kept = at::empty({Bsz, keep}, patch_ids.options());
  {
    const float* lp = logp.data_ptr<float>();  // (B, N, 2) contiguous: keep log-probability at [.., 0]
    int64_t* k = kept.data_ptr<int64_t>();
    std::vector<float> row(static_cast<size_t>(N)), order(static_cast<size_t>(N));
    for (int64_t b = 0; b < Bsz; ++b) {
      for (int64_t j = 0; j < N; ++j) {  // NaN counts as the largest score, as in top-k
        const float v = lp[(b * N + j) * 2];
        row[j] = std::isnan(v) ? std::numeric_limits<float>::infinity() : v;
      }
      order = row;
      std::nth_element(order.begin(), order.begin() + (keep - 1), order.end(), std::greater<float>());
      const float cut = order[keep - 1];
      int64_t above = 0, tied = 0;
      for (int64_t j = 0; j < N; ++j) {
        above += row[j] > cut;
        tied += row[j] == cut;
      }
      const int64_t need = keep - above, steps = std::max<int64_t>(need - 1, 1);
      for (int64_t j = 0, rank = 0, out = 0, next = 0; j < N; ++j) {
        if (row[j] > cut) {
          k[b * keep + out++] = j;
        } else if (row[j] == cut) {
          if (next < need && next * (tied - 1) / steps == rank) {
            k[b * keep + out++] = j;
            ++next;
          }
          ++rank;
        }
      }
    }
  }
  // TokenSequence.select: every row of the new sequence in one index over the flattened batch
  const int64_t Lnew = keep + P;
  at::Tensor rows = at::empty({Bsz * Lnew}, patch_ids.options());
  {
    const int64_t* k = kept.data_ptr<int64_t>();
    const int64_t* s = slots.data_ptr<int64_t>();
    int64_t* r = rows.data_ptr<int64_t>();
    for (int64_t b = 0; b < Bsz; ++b)
      for (int64_t j = 0, seen = 0; j < Lnew; ++j) {
        const int64_t tag = slot_of[j];
        r[b * Lnew + j] = b * L + (tag < 0 ? prefix[-1 - tag] : s[k[b * keep + (seen++)]]);
      }
  }
  const auto gather = [&](const at::Tensor& t) {  // index_select of those rows, as row copies
    const at::Tensor src = t.contiguous();
    at::Tensor out = at::empty({Bsz, Lnew, D}, t.options());
    const size_t bytes = static_cast<size_t>(D) * t.element_size();
    const char* sp = static_cast<const char*>(src.data_ptr());
    char* op = static_cast<char*>(out.data_ptr());
    const int64_t* r = rows.data_ptr<int64_t>();
    for (int64_t i = 0; i < Bsz * Lnew; ++i) std::memcpy(op + i * bytes, sp + r[i] * bytes, bytes);
    return out;
  };
  at::Tensor ids = at::empty({Bsz, keep}, patch_ids.options());
  {
    const at::Tensor pid = patch_ids.contiguous();
    const int64_t *src = pid.data_ptr<int64_t>(), *k = kept.data_ptr<int64_t>();
    int64_t* dst = ids.data_ptr<int64_t>();
    for (int64_t b = 0; b < Bsz; ++b)
      for (int64_t j = 0; j < keep; ++j) dst[b * keep + j] = src[b * N + k[b * keep + j]];
  }
  return {gather(hidden), gather(residual), ids, kept, logp};
}

// Every block of a Vim or DyVM at inference in one call: block_forward layer by layer, with prune_stage before
// the layers in stage_layers, the Python loops (Vim.forward_features, DyVM.forward_inference) call for call.
// Every image has its P prefix tokens at the same positions: positions holds them per segment ((S+1) x P: at
// the start, then after each stage), read by the routers and the stages. layers: per layer [RMSNorm weight,
// in_proj weight, forward branch x 7, backward branch x 7, out_proj weight] (+ [block_head weight, bias] when
// routed); eps: per layer; predictors: the stages' predictor tensors one after another, predictor_sizes
// their counts (10 or 11). hidden (B, L, D), residual (B, L, D) or None, patch_ids (B, L - P) int64 (read only
// with stages) → [output, residual, patch_ids, then per stage (patch_ids', kept slots, log-probabilities),
// then with routers the logits and gates stacked (depth, B, 2)].
std::vector<at::Tensor> stack_forward(const at::Tensor& hidden, const c10::optional<at::Tensor>& residual,
                                      const at::Tensor& patch_ids, at::TensorList layers, at::ArrayRef<double> eps,
                                      double out_scale, bool routed, double router_threshold,
                                      at::IntArrayRef positions, at::IntArrayRef stage_layers,
                                      at::IntArrayRef stage_keep, at::TensorList predictors,
                                      at::IntArrayRef predictor_sizes, at::ArrayRef<double> ln_eps, bool stub_scan,
                                      at::TensorList packed, at::TensorList panels) {
  const at::AutoDispatchBelowADInplaceOrView inference_calls;  // see "Inference calls below autograd"
  const int64_t per_layer = routed ? 19 : 17, depth = static_cast<int64_t>(eps.size());
  const int64_t S = static_cast<int64_t>(stage_layers.size());
  TORCH_CHECK(static_cast<int64_t>(layers.size()) == depth * per_layer,
              "stack_forward: layers must hold ", per_layer, " tensors per layer (", depth, " layers from eps)");
  TORCH_CHECK(static_cast<int64_t>(stage_keep.size()) == S && static_cast<int64_t>(predictor_sizes.size()) == S &&
              static_cast<int64_t>(ln_eps.size()) == S,
              "stack_forward: stage_layers, stage_keep, predictor_sizes and ln_eps must have one entry per stage");
  TORCH_CHECK(positions.size() % static_cast<size_t>(S + 1) == 0,
              "stack_forward: positions must hold the prefix positions of each of the stages + 1 segments");
  const int64_t P = static_cast<int64_t>(positions.size()) / (S + 1);
  TORCH_CHECK(!routed || P >= 1, "stack_forward: routers read prefix tokens; positions is empty");
  int64_t total = 0, previous = 0;
  for (int64_t k = 0; k < S; ++k) {
    TORCH_CHECK(stage_layers[k] >= 1 && stage_layers[k] < depth && (k == 0 || stage_layers[k] > previous),
                "stack_forward: stage_layers must be increasing layer indices in [1, depth)");
    previous = stage_layers[k];
    total += predictor_sizes[k];
  }
  TORCH_CHECK(static_cast<int64_t>(predictors.size()) == total, "stack_forward: predictors must hold the sum of "
              "predictor_sizes tensors");
  TORCH_CHECK(packed.empty() || static_cast<int64_t>(packed.size()) == 2 * depth,
              "stack_forward: packed must be empty or hold each layer's packed in_proj and out_proj weights");
  const int64_t per_panels = static_cast<int64_t>(panels.size()) / std::max<int64_t>(depth, 1);
  TORCH_CHECK(panels.empty() || ((per_panels == 4 || per_panels == 6) && per_panels * depth ==
                                 static_cast<int64_t>(panels.size())),
              "stack_forward: panels must be empty or hold each layer's x_proj and dt_proj panels of both branches "
              "(+ its in_proj's and out_proj's)");
  at::Tensor h = hidden, ids = patch_ids;
  c10::optional<at::Tensor> res = residual;
  std::vector<at::Tensor> outs, logits, gates;
  const auto segment = [&](int64_t s) { return positions.slice(s * P, P); };
  const auto index_of = [&](int64_t s) {  // the router's CPU int64 positions tensor (as the Python _cpu_index)
    at::Tensor t = at::empty({P}, at::TensorOptions().dtype(at::kLong));
    std::copy(segment(s).begin(), segment(s).end(), t.data_ptr<int64_t>());
    return t;
  };
  at::Tensor router_pos = routed ? index_of(0) : at::Tensor();
  for (int64_t i = 0, stage = 0, offset = 0; i < depth; ++i) {
    if (stage < S && stage_layers[stage] == i) {
      TORCH_CHECK(res, "stack_forward: a stage needs the residual stream (it follows layer 0)");
      std::vector<at::Tensor> st = prune_stage(h, *res, ids, predictors.slice(offset, predictor_sizes[stage]),
                                               ln_eps[stage], stage_keep[stage], segment(stage), segment(stage + 1));
      offset += predictor_sizes[stage];
      h = st[0];
      res = st[1];
      ids = st[2];
      outs.insert(outs.end(), {st[2], st[3], st[4]});
      ++stage;
      if (routed) router_pos = index_of(stage);
    }
    at::TensorList p = layers.slice(i * per_layer, per_layer);
    std::vector<at::Tensor> router;
    if (routed) router = {p[17], p[18], router_pos};
    const auto packed_at = [&](int64_t j) {
      return packed.empty() ? c10::optional<at::Tensor>() : c10::optional<at::Tensor>(packed[2 * i + j]);
    };
    std::vector<at::Tensor> out = block_forward(h, res, p[0], eps[i], p[1], p.slice(2, 7), p.slice(9, 7), p[16],
                                                out_scale, c10::nullopt, router, router_threshold, stub_scan,
                                                packed_at(0), packed_at(1),
                                                panels.empty() ? panels : panels.slice(per_panels * i, per_panels));
    h = out[0];
    res = out[1];
    if (routed) {
      logits.push_back(out[2]);
      gates.push_back(out[3]);
    }
  }
  TORCH_CHECK(res, "stack_forward: no layers");
  std::vector<at::Tensor> result = {h, *res, ids};
  result.insert(result.end(), outs.begin(), outs.end());
  if (routed) {
    result.push_back(at::stack(logits));
    result.push_back(at::stack(gates));
  }
  return result;
}

// ------------------------------ a whole classifying forward at inference, one call ------------------------------
// Between two extension calls a forward's Python and small ATen calls ran cold: the blocks' weights and activations
// had pushed the interpreter's and the dispatcher's code and data out of the caches, so the ~20 calls around the
// stack (input check, patch embedding, the class token's placement, pos_embed, final norm, head) cost 250-350 µs of
// the demo teacher's ~1.2 ms batch-1 forward where they take ~100 µs in a warm loop (x.sum() of 8 images right after
// the stack took 30 µs instead of 2.5: docs/speed/2026-12-06c-avx512/cold_after_stack.txt). Here they run in the same
// call as the stack, in C++, with the same ATen calls and float operations as the Python path, so the same values:
// - the input's sum (Python's finite check reads it: a NaN or an infinity makes it non-finite); if it is not finite
//   nothing else runs and logits come back empty;
// - PatchEmbed: patches of at most 64 values (`narrow`, which needs stride == patch) as at::linear over the patches
//   (the Python route's reshape and permute), else at::conv2d with the stride, flatten and transpose;
// - embed_tokens: the prefix tokens (P, D) at `positions`' first segment among the patches, plus pos_embed (1, L, D);
// - under CPU autocast the ATen matmuls inside (the embedding, the blocks', the head) run in 16 bits as the Python
//   path's do, so the logits come back in the autocast dtype;
// - stack_forward (every block and DyVM stage; stub_scan: the benchmarks' matmul floor, as there);
// - final_prefix + forward_head: RMSNorm of residual + hidden at the first prefix token of the last segment (a
//   per-row norm: the values of normalising every prefix token) and at::linear with the head.
// Returns [logits (B, classes) (empty where the sum is not finite), the sum (a float32 scalar)].
std::vector<at::Tensor> forward_logits(const at::Tensor& images, const at::Tensor& patch_weight,
                                       const at::Tensor& patch_bias, int64_t patch, int64_t stride, bool narrow,
                                       const at::Tensor& prefix_tokens, const at::Tensor& pos_embed,
                                       at::TensorList layers, at::ArrayRef<double> eps, double out_scale, bool routed,
                                       double router_threshold, at::IntArrayRef positions,
                                       at::IntArrayRef stage_layers, at::IntArrayRef stage_keep,
                                       at::TensorList predictors, at::IntArrayRef predictor_sizes,
                                       at::ArrayRef<double> ln_eps, bool stub_scan, at::TensorList packed,
                                       at::TensorList panels, const at::Tensor& norm_weight, double norm_eps,
                                       const at::Tensor& head_weight, const at::Tensor& head_bias) {
  const at::AutoDispatchBelowADInplaceOrView inference_calls;  // see "Inference calls below autograd"
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kFloat && images.device().is_cpu(),
              "forward_logits: images must be a (B, C, H, W) float32 CPU tensor");
  const at::Tensor total = images.sum();
  if (!std::isfinite(total.item<float>())) return {at::empty({0}, images.options()), total};
  const int64_t Bsz = images.size(0), C = images.size(1), p = patch, D = patch_weight.size(0);
  TORCH_CHECK(p >= 1 && patch_weight.dim() == 4 && patch_weight.size(1) == C && patch_weight.size(2) == p &&
              patch_weight.size(3) == p && patch_bias.numel() == D,
              "forward_logits: patch_weight must be (D, C, patch, patch) and patch_bias (D)");
  // PatchEmbed.forward → (B, M, D)
  at::Tensor embedded;
  if (narrow) {
    const at::Tensor x = images.contiguous();
    const int64_t H = x.size(2), W = x.size(3), gh = H / p, gw = W / p, M = gh * gw, K = C * p * p;
    at::Tensor patches = at::empty({Bsz, M, K}, x.options());  // each patch in (channel, row, column) order
    const float* xp = x.data_ptr<float>();
    float* pp = patches.data_ptr<float>();
    at::parallel_for(0, Bsz * M, std::max<int64_t>(1, 16384 / K), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / M, i = r % M / gw, j = r % gw;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t y = 0; y < p; ++y)
            std::memcpy(pp + r * K + (c * p + y) * p, xp + ((b * C + c) * H + i * p + y) * W + j * p,
                        sizeof(float) * p);
      }
    });
    embedded = at::linear(patches, patch_weight.reshape({D, K}), patch_bias);
  } else {
    embedded = at::conv2d(images, patch_weight, patch_bias, {stride, stride}).flatten(2).transpose(1, 2);
  }
  const int64_t M = embedded.size(1), S = static_cast<int64_t>(stage_layers.size());
  const int64_t P = static_cast<int64_t>(positions.size()) / (S + 1), L = M + P;
  TORCH_CHECK(prefix_tokens.dim() == 2 && prefix_tokens.size(0) == P && prefix_tokens.size(1) == D &&
              pos_embed.numel() == L * D, "forward_logits: prefix_tokens must be (P, D) and pos_embed (1, M + P, D)");
  // embed_tokens: the sequence with the prefix tokens at positions[0 .. P) and pos_embed added
  std::vector<int64_t> slot_of(L, -1);
  for (int64_t i = 0; i < P; ++i) {
    TORCH_CHECK(positions[i] >= 0 && positions[i] < L && slot_of[positions[i]] < 0,
                "forward_logits: the prefix positions must be distinct and in [0, M + P)");
    slot_of[positions[i]] = i;
  }
  at::Tensor hidden = at::empty({Bsz, L, D}, images.options());
  {
    // under CPU autocast the embedding's matmul ran in 16 bits and Python joins the prefix tokens rounded to that
    // dtype before the float32 pos_embed add: the same roundings, then the adds in float32
    const at::ScalarType joined = embedded.scalar_type();
    const at::Tensor e = embedded.to(at::kFloat).contiguous(),
                     t = prefix_tokens.to(joined).to(at::kFloat).contiguous(), pe = pos_embed.contiguous();
    const float *ep = e.data_ptr<float>(), *tp = t.data_ptr<float>(), *pos = pe.data_ptr<float>();
    float* hp = hidden.data_ptr<float>();
    at::parallel_for(0, Bsz, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, L * D)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t l = 0, n = 0; l < L; ++l) {
          const float* src = slot_of[l] >= 0 ? tp + slot_of[l] * D : ep + (b * M + n++) * D;
          float* dst = hp + (b * L + l) * D;
          const float* add = pos + l * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) dst[d] = src[d] + add[d];
        }
    });
  }
  const at::Tensor patch_ids = at::arange(M, images.options().dtype(at::kLong)).expand({Bsz, M});
  const std::vector<at::Tensor> out =
      stack_forward(hidden, c10::nullopt, patch_ids, layers, eps, out_scale, routed, router_threshold, positions,
                    stage_layers, stage_keep, predictors, predictor_sizes, ln_eps, stub_scan, packed, panels);
  // final_prefix and forward_head: the first prefix token of the last segment
  TORCH_CHECK(P >= 1, "forward_logits: the head reads the first prefix token; positions is empty");
  const int64_t cls = positions[S * P];
  const at::Tensor h = out[0].select(1, cls).contiguous(), r = out[1].select(1, cls).contiguous();
  const at::Tensor normed = add_rms_norm(h, r, norm_weight, norm_eps)[0];
  return {at::linear(normed, head_weight, head_bias), total};
}


}  // namespace

// Which float N = 16 fast path this build compiled: 512 (AVX-512), 256 (AVX2), 0 (none: generic only).
int64_t simd_path() {
#if DYVM_HAVE_N16
  return DYVM_N16_AVX512 ? 512 : 256;
#else
  return 0;
#endif
}

// Ops torch.ops.dyvm_scan.forward / .backward (selective scan) and .conv_forward /
// .conv_backward (causal conv1d), and .simd_path; the extension is loaded as a plain library.
// reverse: run over the reversed sequence (results in the original order); channels_last:
// allocate the (B, E, L) outputs as channel-last memory (B, L, E); mask_grad: also return the
// gradient of the conv's mask (else an empty tensor).
bool lanes_kernels() { return DYVM_LANES; }

// Flush-to-zero and denormals-are-zero (MXCSR's FTZ and DAZ bits: denormal results become 0, denormal operands
// read as 0) on the calling thread and on every thread of the intra-op pool (each thread has its own MXCSR;
// torch.set_flush_denormal sets the calling thread's only). Why: an x86 core takes a microcode assist, about a
// hundred cycles, for each denormal operand of a multiplication. In DyVM fine-tuning the straight-through
// gradients of confident keep decisions (p(keep) = exp(log p) below 2^-126) seed denormal gradients that
// spread to the pruned tokens' slots of every earlier layer; on the Intel kind they made the demo's
// fine-tuning steps twice as slow after ~20 steps (the backward's matmuls 2.6x, the scan backward 1.6x).
// Returns whether both bits were set on the calling thread before. No-op (false) off x86.
bool set_flush_denormal(bool on) {
#if defined(__x86_64__) || defined(__SSE__)
  constexpr unsigned kBits = 0x8040u;  // FTZ (bit 15) | DAZ (bit 6)
  const bool previous = (_mm_getcsr() & kBits) == kBits;
  const auto apply = [on]() {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | kBits) : (csr & ~kBits));
  };
  apply();
  // one item per thread with grain 1: every thread of the OpenMP team runs exactly one (ATen's parallel_for)
  const int64_t threads = at::get_num_threads();
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { apply(); });
  return previous;
#else
  (void)on;
  return false;
#endif
}

TORCH_LIBRARY(dyvm_scan, m) {
  m.def("simd_path() -> int", &simd_path);
  m.def("lanes_kernels() -> bool", &lanes_kernels);
  m.def("set_flush_denormal(bool on) -> bool", &set_flush_denormal);
  m.def("forward(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
        "Tensor? delta_bias, bool delta_softplus, bool reverse=False, bool channels_last=False) -> Tensor");
  m.def("backward(Tensor grad_out, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
        "Tensor? D, Tensor? z, Tensor? delta_bias, bool delta_softplus, bool reverse=False, "
        "bool channels_last=False) -> Tensor[]");
  m.def("forward_dt(Tensor u, Tensor dt, Tensor dt_weight, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
        "Tensor? delta_bias, bool reverse=False, Tensor? scale=None) -> Tensor");
  m.def("forward_dt_add_(Tensor(a!) out, Tensor u, Tensor dt, Tensor dt_weight, Tensor A, Tensor B, Tensor C, "
        "Tensor? D, Tensor? z, Tensor? delta_bias, bool reverse=False, Tensor? scale=None) -> ()");
  m.def("backward_dt(Tensor grad_out, Tensor u, Tensor dt, Tensor dt_weight, Tensor A, Tensor B, Tensor C, "
        "Tensor? D, Tensor? z, Tensor? delta_bias, bool reverse=False, Tensor(a!)? dz_out=None, "
        "bool dz_accumulate=False, Tensor? scale=None) -> Tensor[]");
  m.def("lanes_dt_applies(Tensor u, Tensor A, Tensor? z) -> bool", &lanes_dt_applies);
  m.def("conv_forward(Tensor x, Tensor weight, Tensor? bias, bool silu, Tensor? mask=None, "
        "bool reverse=False, bool channels_last=False) -> Tensor");
  m.def("conv_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, bool silu, "
        "Tensor? mask=None, bool reverse=False, bool channels_last=False, bool mask_grad=False, "
        "Tensor(a!)? dx_out=None, bool dx_accumulate=False) -> Tensor[]");
  m.def("mix_forward(Tensor xz, Tensor[] forward_params, Tensor[] backward_params, Tensor out_weight, "
        "float out_scale, Tensor? gates, Tensor[] router, float router_threshold, bool stub_scan, "
        "Tensor? out_packed, Tensor[] panels) -> Tensor[]");
  m.def("block_forward(Tensor hidden, Tensor? residual, Tensor norm_weight, float eps, Tensor in_weight, "
        "Tensor[] forward_params, Tensor[] backward_params, Tensor out_weight, float out_scale, Tensor? gates, "
        "Tensor[] router, float router_threshold, bool stub_scan, Tensor? in_packed, Tensor? out_packed, "
        "Tensor[] panels) -> Tensor[]");
  m.def("router_forward(Tensor input, Tensor weight, Tensor bias, float threshold) -> Tensor[]");
  m.def("rms_norm_backward(Tensor grad_out, Tensor res, Tensor weight, float eps, Tensor? grad_res) -> Tensor[]");
  m.def("weight_grad(Tensor grad, Tensor input) -> Tensor");
  m.def("predictor_forward(Tensor x, Tensor[] predictor, float ln_eps) -> Tensor");
  m.def("prune_stage(Tensor hidden, Tensor residual, Tensor patch_ids, Tensor[] predictor, float ln_eps, int keep, "
        "int[] prefix, int[] new_prefix) -> Tensor[]");
  m.def("stack_forward(Tensor hidden, Tensor? residual, Tensor patch_ids, Tensor[] layers, float[] eps, "
        "float out_scale, bool routed, float router_threshold, int[] positions, int[] stage_layers, int[] stage_keep, "
        "Tensor[] predictors, int[] predictor_sizes, float[] ln_eps, bool stub_scan, Tensor[] packed, "
        "Tensor[] panels) -> Tensor[]");
  m.def("forward_logits(Tensor images, Tensor patch_weight, Tensor patch_bias, int patch, int stride, bool narrow, "
        "Tensor prefix_tokens, Tensor pos_embed, Tensor[] layers, float[] eps, float out_scale, bool routed, "
        "float router_threshold, int[] positions, int[] stage_layers, int[] stage_keep, Tensor[] predictors, "
        "int[] predictor_sizes, float[] ln_eps, bool stub_scan, Tensor[] packed, Tensor[] panels, Tensor norm_weight, "
        "float norm_eps, Tensor head_weight, Tensor head_bias) -> Tensor[]");
  m.def("linear(Tensor x, Tensor weight, Tensor? packed, Tensor? panel=None) -> Tensor");
  m.def("packed_linear_pays(int rows, int in_features, int out_features) -> bool", &packed_linear_pays);
  m.def("directions_in_parallel(int values) -> bool", &directions_in_parallel);
  m.def("panel(Tensor weight) -> Tensor");
  m.def("add_rms_norm(Tensor hidden, Tensor? residual, Tensor weight, float eps) -> Tensor[]");
  m.def("panel_linear(Tensor x, Tensor panel, int out_features) -> Tensor");
  m.def("influence_terms(Tensor u, Tensor delta, Tensor dt_bias, Tensor a, Tensor b, Tensor c, int position, bool backward) -> Tensor");
}

TORCH_LIBRARY_IMPL(dyvm_scan, CPU, m) {
  m.impl("forward", &scan_forward);
  m.impl("backward", &scan_backward);
  m.impl("forward_dt", &scan_forward_dt);
  m.impl("backward_dt", &scan_backward_dt);
  m.impl("forward_dt_add_", &scan_forward_dt_add);
  m.impl("conv_forward", &conv_forward);
  m.impl("conv_backward", &conv_backward);
  m.impl("mix_forward", &mix_forward);
  m.impl("block_forward", &block_forward);
  m.impl("prune_stage", &prune_stage);
  m.impl("predictor_forward", &predictor_forward);
  m.impl("router_forward", &router_forward);
  m.impl("stack_forward", &stack_forward);
  m.impl("forward_logits", &forward_logits);
  m.impl("linear", &inference_linear);
  m.impl("panel", &weight_panel);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("rms_norm_backward", &rms_norm_backward);
  m.impl("weight_grad", &weight_grad);
  m.impl("panel_linear", &panel_linear);
  m.impl("influence_terms", &influence_terms);
}

// the ops that take oneDNN's packed weights (opaque MkldnnCPU tensors, whose dispatch key outranks CPU's)
TORCH_LIBRARY_IMPL(dyvm_scan, MkldnnCPU, m) {
  m.impl("mix_forward", &mix_forward);
  m.impl("block_forward", &block_forward);
  m.impl("stack_forward", &stack_forward);
  m.impl("forward_logits", &forward_logits);
  m.impl("linear", &inference_linear);
}
#endif  // DYVM_SCAN_STANDALONE
