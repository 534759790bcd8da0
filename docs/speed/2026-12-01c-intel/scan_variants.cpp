// Variants of the C++ scan's AVX-512 forward kernel against the kernel itself (forward_rows_n16 of
// src/dyvm/kernels/csrc/selective_scan.cpp, included as is), timed in interleaved A/B rounds in one process:
// per round the kernel and the variant each run twice, in alternating order; the printed ratio is the
// median over rounds of variant time / kernel time, with whether the variant's output is bit-identical.
// Knock-out variants (no_*) skip part of the work: their ratios say what that part costs.
// forward_lanes16 is the file's own kernel with 16 channels in the lanes (from commit 6faafe4 on; before it,
// this harness held a copy of it as a variant). Last, the two backward kernels of the file: backward_lanes16
// (channels in the lanes) against backward_chunk_n16 (states in the lanes), with the largest gradient
// difference relative to each gradient's largest magnitude.
//
// Build and run from the repository root (what docs/speed/2026-12-01c-intel/scan_variants.txt shows):
//   g++ -O3 -march=native -fno-math-errno -fno-trapping-math -fopenmp -std=c++17 \
//       docs/speed/2026-12-01c-intel/scan_variants.cpp -o /tmp/scan_variants
//   /tmp/scan_variants 1 384 197 21     # Vim-T's batch-1 shape (B, E, L, rounds)
//   /tmp/scan_variants 128 128 50 15    # the demo's training batch
#define DYVM_SCAN_STANDALONE 1
#include "../../../src/dyvm/kernels/csrc/selective_scan.cpp"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>
using namespace std;
namespace {
// variant: two channels per t-loop, sharing B/C loads
void forward_rows_n16_x2(const Args<float>& a, const StridedOut<float>& out, int64_t r0, int64_t r1) {
  const int64_t L = a.L, E = a.E, Lp = round16(L), ld = Lp;
  Scratch<float> s(512 + 6 * Lp + 4 * kBlock * ld);
  float* __restrict__ ring = s.base;        // 2 rings
  float* __restrict__ ring2 = ring + 256;
  float* __restrict__ y = ring2 + 256;
  float* __restrict__ y2 = y + Lp;
  float* __restrict__ dt = y2 + Lp;
  float* __restrict__ dtu = dt + Lp;
  float* __restrict__ dt2 = dtu + Lp;
  float* __restrict__ dtu2 = dt2 + Lp;
  float* __restrict__ ob = dtu2 + Lp;
  BlockIn<float> in{ob + kBlock * ld, ob + 2 * kBlock * ld, ob + 3 * kBlock * ld, ld};
  std::fill(ring, ring + 512, 0.0f);
  const int64_t stB = a.reverse ? -a.sBl : a.sBl, stC = a.reverse ? -a.sCl : a.sCl;
  for (int64_t row0 = r0; row0 < r1;) {
    const int64_t b = row0 / E, e0 = row0 % E;
    const int64_t nb = std::min(std::min(kBlock, r1 - row0), E - e0);
    in.load(a, b, e0, nb);
    const float* __restrict__ Bs = bc_base(a.Bm, a.sBb, a.sBl, b, L, a.reverse);
    const float* __restrict__ Cs = bc_base(a.Cm, a.sCb, a.sCl, b, L, a.reverse);
    int64_t j = 0;
    for (; j + 1 < nb; j += 2) {
      const int64_t d = e0 + j;
      const float* ur = in.u + j * ld; const float* ur2 = ur + ld;
      row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : 0.0f, a.softplus, Lp, dt, dtu, static_cast<float*>(nullptr));
      row_delta(ur2, in.raw + (j + 1) * ld, a.bias ? a.bias[d + 1] : 0.0f, a.softplus, Lp, dt2, dtu2, static_cast<float*>(nullptr));
      const v16f A2 = load16(a.A + d * 16) * 1.44269504088896341f;
      const v16f A2b = load16(a.A + (d + 1) * 16) * 1.44269504088896341f;
      v16f h = {}, g = {};
      for (int64_t t = 0; t < L; ++t) {
        const v16f Bt = load16(Bs + t * stB), Ct = load16(Cs + t * stC);
        h = exp2_v16(A2 * dt[t]) * h + Bt * dtu[t];
        g = exp2_v16(A2b * dt2[t]) * g + Bt * dtu2[t];
        store16(ring + 16 * (t & 15), h * Ct);
        store16(ring2 + 16 * (t & 15), g * Ct);
        if ((t & 15) == 15) { store16(y + (t - 15), row_sums16(ring)); store16(y2 + (t - 15), row_sums16(ring2)); }
      }
      if (L & 15) { store16(y + (L & ~int64_t(15)), row_sums16(ring)); store16(y2 + (L & ~int64_t(15)), row_sums16(ring2)); }
      row_output(ur, a.z.p ? in.z + j * ld : static_cast<float*>(nullptr), a.D ? a.D[d] : 0.0f, Lp, y, ob + j * ld);
      row_output(ur2, a.z.p ? in.z + (j + 1) * ld : static_cast<float*>(nullptr), a.D ? a.D[d + 1] : 0.0f, Lp, y2, ob + (j + 1) * ld);
    }
    for (; j < nb; ++j) { /* odd tail: not in these shapes */ }
    scatter_out(out, b, e0, nb, L, a.reverse, ob, ld);
    row0 += nb;
  }
}
template <int SKIP>  // 1: no gather/scatter, 2: no row_delta, 4: no row_output, 8: no core
void fwd_skip(const Args<float>& a, const StridedOut<float>& out, int64_t r0, int64_t r1) {
  const int64_t L = a.L, E = a.E, Lp = round16(L), ld = Lp;
  Scratch<float> s(256 + 3 * Lp + 4 * kBlock * ld);
  float* __restrict__ ring = s.base; float* __restrict__ y = ring + 256; float* __restrict__ dt = y + Lp;
  float* __restrict__ dtu = dt + Lp; float* __restrict__ ob = dtu + Lp;
  BlockIn<float> in{ob + kBlock * ld, ob + 2 * kBlock * ld, ob + 3 * kBlock * ld, ld};
  std::fill(s.base, s.base + 256 + 3 * Lp + 4 * kBlock * ld, 0.1f);
  const int64_t stB = a.reverse ? -a.sBl : a.sBl, stC = a.reverse ? -a.sCl : a.sCl;
  for (int64_t row0 = r0; row0 < r1;) {
    const int64_t b = row0 / E, e0 = row0 % E;
    const int64_t nb = std::min(std::min(kBlock, r1 - row0), E - e0);
    if (!(SKIP & 1)) in.load(a, b, e0, nb);
    const float* __restrict__ Bs = bc_base(a.Bm, a.sBb, a.sBl, b, L, a.reverse);
    const float* __restrict__ Cs = bc_base(a.Cm, a.sCb, a.sCl, b, L, a.reverse);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t d = e0 + j; const float* ur = in.u + j * ld;
      if (!(SKIP & 2)) row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : 0.0f, a.softplus, Lp, dt, dtu, static_cast<float*>(nullptr));
      const v16f A2 = load16(a.A + d * 16) * 1.44269504088896341f;
      v16f h = {};
      if (!(SKIP & 8)) {
      for (int64_t t = 0; t < L; ++t) {
        h = exp2_v16(A2 * dt[t]) * h + load16(Bs + t * stB) * dtu[t];
        store16(ring + 16 * (t & 15), h * load16(Cs + t * stC));
        if ((t & 15) == 15) store16(y + (t - 15), row_sums16(ring));
      }
      if (L & 15) store16(y + (L & ~int64_t(15)), row_sums16(ring));
      }
      if (!(SKIP & 4)) row_output(ur, a.z.p ? in.z + j * ld : static_cast<float*>(nullptr), a.D ? a.D[d] : 0.0f, Lp, y, ob + j * ld);
    }
    if (!(SKIP & 1)) scatter_out(out, b, e0, nb, L, a.reverse, ob, ld);
    row0 += nb;
  }
}
template <int SKIP>
void bwd_skip(const Args<float>& a, const Strided<float>& gout,
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
      if (!(SKIP & 1)) { in.load(a, b, e0, nb);
      gather_in(gout, b, e0, nb, L, a.reverse, gob, ld); }
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
        if (!(SKIP & 8)) row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : 0.0f, a.softplus, L, dt, dtu,
                  a.softplus ? sig : static_cast<float*>(nullptr));
        // recompute the states (and C_t h_t for the gate's y)
        v16f h = {};
        if (SKIP & 2) {} else if (zr) {
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
        if (!(SKIP & 8)) row_gate_backward(ur, zr, Dd, L, gob + j * ld, yv, dyv, dzb + j * ld);
        // reverse recurrence; the decay is read back or recomputed (store_decay); exp(Δ_{t+1} A),
        // h_t carry over in registers
        v16f dh = {}, e_next = {};
        v16f h_t = load16(Hs + 16 * L);
        v16f dA = load16(dAacc + j * 16);
        if (!(SKIP & 4)) for (int64_t t = L - 1; t >= 0; --t) {
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
        if (!(SKIP & 8)) row_finish(ur, Dd, a.softplus, L, s1, s2, dt, sig, dyv, ddb + j * ld, dub + j * ld, dDacc[j], dbacc[j]);
      }
      if (!(SKIP & 1)) {
      if (a.z.p) scatter_out(g.dz, b, e0, nb, L, a.reverse, dzb, ld);
      scatter_out(g.ddelta, b, e0, nb, L, a.reverse, ddb, ld);
      scatter_out(g.du, b, e0, nb, L, a.reverse, dub, ld);
      }
    }
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t d = e0 + j;
      std::memcpy(g.dA + d * 16, dAacc + j * 16, 16 * sizeof(float));
      if (g.dD) g.dD[d] = dDacc[j];
      if (g.dbias) g.dbias[d] = dbacc[j];
    }
  }
}


// softplus / silu of 16 lanes through the scalar functions (vectorised by omp simd as in row_delta)
DYVM_INLINE v16f softplus16(v16f x) {
  alignas(64) float in[16], o[16];
  store16(in, x);
#pragma omp simd
  for (int i = 0; i < 16; ++i) o[i] = softplus_f(in[i]);
  return load16(o);
}
DYVM_INLINE v16f sigmoid16(v16f x) {
  alignas(64) float in[16], o[16];
  store16(in, x);
#pragma omp simd
  for (int i = 0; i < 16; ++i) o[i] = sigmoid_f(in[i]);
  return load16(o);
}
DYVM_INLINE v16f recip16(v16f d) {  // rcp14 + one Newton step
  const __m512 dd = reinterpret_cast<__m512>(d);
  const __m512 r = _mm512_rcp14_ps(dd);
  const __m512 e = _mm512_fnmadd_ps(dd, r, _mm512_set1_ps(1.0f));  // 1 - d r
  return reinterpret_cast<v16f>(_mm512_fmadd_ps(r, e, r));
}
DYVM_INLINE v16f vmax0(v16f x) { return reinterpret_cast<v16f>(_mm512_max_ps(reinterpret_cast<__m512>(x), _mm512_setzero_ps())); }
DYVM_INLINE v16f vabs(v16f x) { return reinterpret_cast<v16f>(_mm512_abs_ps(reinterpret_cast<__m512>(x))); }
DYVM_INLINE v16f exp16(v16f x) { return exp2_v16(x * 1.44269504088896341f); }
DYVM_INLINE v16f softplus16_rcp(v16f x) {
  const v16f e = exp16(v16f{} - vabs(x));
  const v16f s = e * recip16(e + 2.0f);
  const v16f s2 = s * s;
  v16f p = v16f{} + 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f; p = p * s2 + 1.0f / 11.0f; p = p * s2 + 1.0f / 9.0f; p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f; p = p * s2 + 1.0f / 3.0f; p = p * s2 + 1.0f;
  return vmax0(x) + (s + s) * p;
}
DYVM_INLINE v16f sigmoid16_rcp(v16f x) { return recip16(exp16(v16f{} - x) + 1.0f); }
void row_delta_v(const float* u, const float* raw, float bias, int64_t Lp, float* dt, float* dtu) {
  for (int64_t t = 0; t < Lp; t += 16) { const v16f v = softplus16_rcp(load16(raw + t) + bias); store16(dt + t, v); store16(dtu + t, v * load16(u + t)); }
}
void row_output_v(const float* u, const float* z, float Dd, int64_t Lp, const float* y, float* o) {
  for (int64_t t = 0; t < Lp; t += 16) { const v16f zt = load16(z + t); store16(o + t, (load16(y + t) + load16(u + t) * Dd) * (zt * sigmoid16_rcp(zt))); }
}
template <bool V>
void fwd_v(const Args<float>& a, const StridedOut<float>& out, int64_t r0, int64_t r1) {
  const int64_t L = a.L, E = a.E, Lp = round16(L), ld = Lp;
  Scratch<float> s(256 + 3 * Lp + 4 * kBlock * ld);
  float* __restrict__ ring = s.base; float* __restrict__ y = ring + 256; float* __restrict__ dt = y + Lp;
  float* __restrict__ dtu = dt + Lp; float* __restrict__ ob = dtu + Lp;
  BlockIn<float> in{ob + kBlock * ld, ob + 2 * kBlock * ld, ob + 3 * kBlock * ld, ld};
  std::fill(s.base, s.base + 256 + 3 * Lp + 4 * kBlock * ld, 0.0f);
  const int64_t stB = a.reverse ? -a.sBl : a.sBl, stC = a.reverse ? -a.sCl : a.sCl;
  for (int64_t row0 = r0; row0 < r1;) {
    const int64_t b = row0 / E, e0 = row0 % E;
    const int64_t nb = std::min(std::min(kBlock, r1 - row0), E - e0);
    in.load(a, b, e0, nb);
    const float* __restrict__ Bs = bc_base(a.Bm, a.sBb, a.sBl, b, L, a.reverse);
    const float* __restrict__ Cs = bc_base(a.Cm, a.sCb, a.sCl, b, L, a.reverse);
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t d = e0 + j; const float* ur = in.u + j * ld;
      if (V) row_delta_v(ur, in.raw + j * ld, a.bias[d], Lp, dt, dtu);
      else row_delta(ur, in.raw + j * ld, a.bias ? a.bias[d] : 0.0f, a.softplus, Lp, dt, dtu, static_cast<float*>(nullptr));
      const v16f A2 = load16(a.A + d * 16) * 1.44269504088896341f;
      v16f h = {};
      for (int64_t t = 0; t < L; ++t) {
        h = exp2_v16(A2 * dt[t]) * h + load16(Bs + t * stB) * dtu[t];
        store16(ring + 16 * (t & 15), h * load16(Cs + t * stC));
        if ((t & 15) == 15) store16(y + (t - 15), row_sums16(ring));
      }
      if (L & 15) store16(y + (L & ~int64_t(15)), row_sums16(ring));
      if (V) row_output_v(ur, in.z + j * ld, a.D[d], Lp, y, ob + j * ld);
      else row_output(ur, a.z.p ? in.z + j * ld : static_cast<float*>(nullptr), a.D ? a.D[d] : 0.0f, Lp, y, ob + j * ld);
    }
    scatter_out(out, b, e0, nb, L, a.reverse, ob, ld);
    row0 += nb;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t Bsz = argc > 1 ? atol(argv[1]) : 1, E = argc > 2 ? atol(argv[2]) : 384, L = argc > 3 ? atol(argv[3]) : 197;
  const int rounds = argc > 4 ? atoi(argv[4]) : 21;
  const int64_t N = 16;
  mt19937 rng(0); normal_distribution<float> nd(0, 1); uniform_real_distribution<float> ud(0, 1);
  auto fill = [&](vector<float>& v, float sc) { for (auto& x : v) x = nd(rng) * sc; };
  vector<float> u(Bsz * L * E), de(Bsz * L * E), z(Bsz * L * E), o(Bsz * L * E), o2(Bsz * L * E), A(E * N),
      Bm(Bsz * L * N), Cm(Bsz * L * N), D(E), bias(E);
  fill(u, 1); fill(de, 0.5); fill(z, 1); fill(Bm, 1); fill(Cm, 1); fill(D, 1); fill(bias, 0.1);
  for (auto& x : A) x = -ud(rng) * 4;
  // the mixer's layout: channel-last (B, L, E) memory viewed as (B, E, L)
  Args<float> a{{u.data(), L * E, 1, E}, {de.data(), L * E, 1, E}, {z.data(), L * E, 1, E}, A.data(), Bm.data(),
                Cm.data(), L * N, N, L * N, N, D.data(), bias.data(), Bsz, E, L, N, true, false};
  StridedOut<float> ref{o.data(), L * E, 1, E}, out{o2.data(), L * E, 1, E};
  const int64_t rows = Bsz * E;
  vector<pair<string, function<void()>>> variants = {
    {"two rows per recurrence loop", [&] { forward_rows_n16_x2(a, out, 0, rows); }},
    {"forward_lanes16 (of the file)", [&] { forward_lanes16(a, out, 0, rows / 16); }},
    {"rcp14+Newton for the divisions", [&] { fwd_v<true>(a, out, 0, rows); }},
    {"no_gather_scatter", [&] { fwd_skip<1>(a, out, 0, rows); }},
    {"no_delta_softplus", [&] { fwd_skip<2>(a, out, 0, rows); }},
    {"no_output_gate", [&] { fwd_skip<4>(a, out, 0, rows); }},
    {"no_recurrence", [&] { fwd_skip<8>(a, out, 0, rows); }},
  };
  printf("B %ld, E %ld, L %ld, %d rounds; variant time / kernel time (median, IQR)\n", (long)Bsz, (long)E, (long)L, rounds);
  for (auto& [name, fn] : variants) {
    forward_rows_n16(a, ref, 0, rows);
    std::fill(o2.begin(), o2.end(), 0.0f);
    fn();
    const bool same = memcmp(o.data(), o2.data(), o.size() * sizeof(float)) == 0;
    vector<double> ratio;
    for (int r = 0; r < rounds; ++r) {
      double t[2];
      for (int k = 0; k < 2; ++k) {
        const bool variant = (k == 0) == (r % 2 == 1);
        auto t0 = chrono::steady_clock::now();
        for (int i = 0; i < 2; ++i) { if (variant) fn(); else forward_rows_n16(a, ref, 0, rows); }
        t[variant] = chrono::duration<double>(chrono::steady_clock::now() - t0).count();
      }
      ratio.push_back(t[1] / t[0]);
    }
    sort(ratio.begin(), ratio.end());
    const size_t n = ratio.size();
    printf("  %-32s %.3f (%.3f-%.3f)  output %s\n", name.c_str(), ratio[n / 2], ratio[n / 4], ratio[3 * n / 4],
           name.rfind("no_", 0) == 0 ? "(not comparable)" : same ? "bit-identical" : "differs");
  }
  // the backward kernels
  vector<float> go(Bsz * L * E);
  fill(go, 1);
  struct G { vector<float> du, dd, dz, dA, dB, dC, dD, db; };
  auto make = [&]() {
    return G{vector<float>(Bsz * L * E), vector<float>(Bsz * L * E), vector<float>(Bsz * L * E), vector<float>(E * N),
             vector<float>(Bsz * L * N), vector<float>(Bsz * L * N), vector<float>(E), vector<float>(E)};
  };
  G rows_g = make(), lanes_g = make();
  auto grads = [&](G& x) {
    return Grads<float>{{x.du.data(), L * E, 1, E}, {x.dd.data(), L * E, 1, E}, {x.dz.data(), L * E, 1, E}, x.dA.data(),
                        x.dB.data(), x.dC.data(), x.dD.data(), x.db.data()};
  };
  Strided<float> gs{go.data(), L * E, 1, E};
  auto run_rows = [&] {
    std::fill(rows_g.dB.begin(), rows_g.dB.end(), 0.0f);
    std::fill(rows_g.dC.begin(), rows_g.dC.end(), 0.0f);
    backward_chunk_n16(a, gs, grads(rows_g), 0, 0, E);
  };
  auto run_lanes = [&] { backward_lanes16(a, gs, grads(lanes_g), 0, 0, E); };
  run_rows();
  run_lanes();
  double worst = 0;
  for (auto [p, q] : {pair{&rows_g.du, &lanes_g.du}, pair{&rows_g.dd, &lanes_g.dd}, pair{&rows_g.dz, &lanes_g.dz},
                      pair{&rows_g.dA, &lanes_g.dA}, pair{&rows_g.dB, &lanes_g.dB}, pair{&rows_g.dC, &lanes_g.dC},
                      pair{&rows_g.dD, &lanes_g.dD}, pair{&rows_g.db, &lanes_g.db}}) {
    double m = 0, scale = 0;
    for (size_t i = 0; i < p->size(); ++i) {
      m = max(m, (double)fabs((*p)[i] - (*q)[i]));
      scale = max(scale, (double)fabs((*p)[i]));
    }
    worst = max(worst, m / (scale + 1e-30));
  }
  vector<double> ratio;
  for (int r = 0; r < rounds; ++r) {
    double t[2];
    for (int k = 0; k < 2; ++k) {
      const bool lanes = (k == 0) == (r % 2 == 1);
      auto t0 = chrono::steady_clock::now();
      for (int i = 0; i < 2; ++i) { if (lanes) run_lanes(); else run_rows(); }
      t[lanes] = chrono::duration<double>(chrono::steady_clock::now() - t0).count();
    }
    ratio.push_back(t[1] / t[0]);
  }
  sort(ratio.begin(), ratio.end());
  const size_t n = ratio.size();
  printf("backward, lanes / rows time: %.3f (%.3f-%.3f); largest gradient difference %.1e of the gradient's scale\n",
         ratio[n / 2], ratio[n / 4], ratio[3 * n / 4], worst);
}
