// standalone micro-benchmark of forward_lanes16's arithmetic (Vim-T b1 shapes), variants interleaved
#include <immintrin.h>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <vector>
#include <chrono>
#include <algorithm>
#include <random>
#define DYVM_INLINE inline __attribute__((always_inline))
typedef float v16f __attribute__((vector_size(64)));
DYVM_INLINE v16f load16(const float* p) { v16f v; std::memcpy(&v, p, 64); return v; }
DYVM_INLINE void store16(float* p, v16f v) { std::memcpy(p, &v, 64); }
DYVM_INLINE v16f exp2_v16(v16f t) {
  const __m512 tt = reinterpret_cast<__m512>(t);
  const v16f f = reinterpret_cast<v16f>(_mm512_reduce_ps(tt, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
  v16f p = v16f{} + 1.867216110e-03f;
  p = p * f + 9.016941487e-03f; p = p * f + 5.579984914e-02f; p = p * f + 2.401645385e-01f;
  p = p * f + 6.931512913e-01f; p = p * f + 1.0f;
  return reinterpret_cast<v16f>(_mm512_scalef_ps(reinterpret_cast<__m512>(p), tt));
}
// 2^t with a 16-entry table: f in [0, 1/16), degree 3
alignas(64) static float TAB[16];
static float Q1, Q2, Q3; static float PN[6];
DYVM_INLINE v16f exp2_tab(v16f t, __m512 tab) {
  const __m512 tt = reinterpret_cast<__m512>(t);
  const __m512 f = _mm512_reduce_ps(tt, (4 << 4) | _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 k = _mm512_sub_ps(tt, f);  // multiple of 1/16
  const __m512 y = _mm512_add_ps(k, _mm512_set1_ps(1.5f * 524288.0f));  // low 4 bits of mantissa: 16 k mod 16
  const __m512 T = _mm512_permutexvar_ps(_mm512_castps_si512(y), tab);
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(Q3), f, _mm512_set1_ps(Q2));
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(Q1));
  const __m512 Tf = _mm512_mul_ps(T, f);
  const __m512 r = _mm512_fmadd_ps(Tf, q, T);
  return reinterpret_cast<v16f>(_mm512_scalef_ps(r, tt));
}

// 2^t, round-to-nearest reduction, 2^k added into the exponent bits (no vscalefps); t clamped at -125
DYVM_INLINE v16f exp2_int(v16f t) {
  const __m512 tt = _mm512_max_ps(reinterpret_cast<__m512>(t), _mm512_set1_ps(-125.0f));
  const __m512 f = _mm512_reduce_ps(tt, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 y = _mm512_add_ps(tt, _mm512_set1_ps(12582912.0f));
  __m512 p = _mm512_set1_ps(PN[5]);
  for (int i = 4; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(PN[i]));
  return reinterpret_cast<v16f>(_mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(_mm512_castps_si512(y), 23)));
}
DYVM_INLINE v16f exp2_tabint(v16f t, __m512 tab) {
  const __m512 tt = _mm512_max_ps(reinterpret_cast<__m512>(t), _mm512_set1_ps(-125.0f));
  const __m512 f = _mm512_reduce_ps(tt, (4 << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // [-1/32, 1/32]
  const __m512 y = _mm512_add_ps(tt, _mm512_set1_ps(1.5f * 524288.0f));  // low bits: round(16 t)
  const __m512 T = _mm512_permutexvar_ps(_mm512_castps_si512(y), tab);
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(Q3), f, _mm512_set1_ps(Q2));
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(Q1));
  const __m512 r = _mm512_fmadd_ps(_mm512_mul_ps(T, f), q, T);
  // exponent: round(16 t) >> 4 (arithmetic) into the exponent bits
  const __m512i k = _mm512_srai_epi32(_mm512_slli_epi32(_mm512_castps_si512(y), 10), 14);
  return reinterpret_cast<v16f>(_mm512_add_epi32(_mm512_castps_si512(r), _mm512_slli_epi32(k, 23)));
}
template <typename V> DYVM_INLINE V log1p_unit(V e) {
  const V s = e / (e + 2.0f); const V s2 = s * s;
  V p = V{} + 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f; p = p * s2 + 1.0f / 11.0f; p = p * s2 + 1.0f / 9.0f; p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f; p = p * s2 + 1.0f / 3.0f; p = p * s2 + 1.0f;
  return (s + s) * p;
}
DYVM_INLINE v16f rcp_nr(v16f d) {  // 1/d: rcp14 + one Newton step
  const __m512 dd = reinterpret_cast<__m512>(d);
  const __m512 r = _mm512_rcp14_ps(dd);
  const __m512 e = _mm512_fnmadd_ps(dd, r, _mm512_set1_ps(1.0f));
  return reinterpret_cast<v16f>(_mm512_fmadd_ps(r, e, r));
}
DYVM_INLINE v16f log1p_rcp(v16f e) {
  const v16f s = e * rcp_nr(e + 2.0f); const v16f s2 = s * s;
  v16f p = v16f{} + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f; p = p * s2 + 1.0f / 9.0f; p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f; p = p * s2 + 1.0f / 3.0f; p = p * s2 + 1.0f;
  return (s + s) * p;
}
DYVM_INLINE v16f exp_v16(v16f x) { return exp2_v16(x * 1.44269504088896341f); }
DYVM_INLINE v16f silu_v16(v16f z) { return z / (exp_v16(-z) + 1.0f); }
DYVM_INLINE v16f silu_rcp(v16f z) { return z * rcp_nr(exp_v16(-z) + 1.0f); }
DYVM_INLINE v16f relu_v16(v16f x) { return reinterpret_cast<v16f>(_mm512_max_ps(_mm512_setzero_ps(), reinterpret_cast<__m512>(x))); }
DYVM_INLINE v16f ena(v16f x) { return exp_v16(-reinterpret_cast<v16f>(_mm512_abs_ps(reinterpret_cast<__m512>(x)))); }
DYVM_INLINE v16f softplus_v16(v16f x) { return relu_v16(x) + log1p_unit(ena(x)); }
DYVM_INLINE v16f softplus_rcp(v16f x) { return relu_v16(x) + log1p_rcp(ena(x)); }

struct P { int L, E, ldx; const float *u, *delta, *z, *A, *Bm, *Cm, *D, *bias; float* out; };

// VAR bit 0: rcp in softplus/silu; bit 1: chunked (CH steps); bit 2: table exp
template <int VAR>
void kernel(const P& a) {
  const int L = a.L, nblk = a.E / 16, CH = (VAR & 2) ? 48 : L;
  alignas(64) float At2[256];
  static thread_local std::vector<float> scr; scr.assign(3 * 16 * L + 16, 0.f);
  float* DT = (float*)(((uintptr_t)scr.data() + 63) & ~uintptr_t(63));
  float* DTU = DT + 16 * CH; float* Y = DTU + 16 * CH;
  const __m512 tab = _mm512_load_ps(TAB);
  for (int k = 0; k < nblk; ++k) {
    const int e0 = k * 16;
    for (int n = 0; n < 16; ++n) for (int j = 0; j < 16; ++j) At2[16 * n + j] = a.A[(e0 + j) * 16 + n] * 1.44269504088896341f;
    const v16f bias = load16(a.bias + e0), Dv = load16(a.D + e0);
    v16f h[16] = {};
    for (int c0 = 0; c0 < L; c0 += CH) {
      const int c1 = std::min(L, c0 + CH);
      for (int s = c0; s < c1; ++s) {
        v16f dt = load16(a.delta + s * a.ldx + e0) + bias;
        dt = (VAR & 1) ? softplus_rcp(dt) : softplus_v16(dt);
        store16(DT + 16 * (s - c0), dt);
        store16(DTU + 16 * (s - c0), load16(a.u + s * a.ldx + e0) * dt);
      }
      for (int s = c0; s < c1; ++s) {
        const v16f dt = load16(DT + 16 * (s - c0)), dtu = load16(DTU + 16 * (s - c0));
        const float* Bt = a.Bm + s * 48; const float* Ct = a.Cm + s * 48;
        v16f sum[4] = {};
#pragma GCC unroll 16
        for (int n = 0; n < 16; ++n) {
          const v16f arg = load16(At2 + 16 * n) * dt;
          const v16f e = (VAR & 32) ? v16f{} + 0.9f : (VAR & 16) ? exp2_tabint(arg, tab) : (VAR & 8) ? exp2_int(arg) : (VAR & 4) ? exp2_tab(arg, tab) : exp2_v16(arg);
          h[n] = e * h[n] + dtu * Bt[n];
          sum[n % 4] += h[n] * Ct[n];
        }
        store16(Y + 16 * (s - c0), ((sum[0] + sum[1]) + (sum[2] + sum[3])) + Dv * load16(a.u + s * a.ldx + e0));
      }
      for (int s = c0; s < c1; ++s) {
        float* ot = a.out + s * a.E + e0;
        const v16f zz = load16(a.z + s * a.ldx + e0);
        v16f g = load16(Y + 16 * (s - c0)) * ((VAR & 1) ? silu_rcp(zz) : silu_v16(zz));
        __asm__("" : "+v"(g));
        store16(ot, g);
      }
    }
  }
}
typedef void (*K)(const P&);
int main() {
  for (int j = 0; j < 16; ++j) TAB[j] = (float)std::exp2((double)j / 16);
  // degree-3 minimax-ish for 2^f on [0,1/16): Taylor coefficients of 2^f - 1 over f (fine for a timing test)
  const double l = std::log(2.0); Q1 = l; Q2 = l * l / 2; Q3 = l * l * l / 6; { double c = 1; for (int i = 0; i < 6; ++i) { PN[i] = c; c = c * l / (i + 1); } }
  const int L = 197, E = 384, ldx = 2 * E;  // xz layout: u, delta, z rows of stride 2E
  std::mt19937 g(0); std::normal_distribution<float> nd(0, 1);
  std::vector<float> u(L * ldx), delta(L * ldx), z(L * ldx), A(E * 16), Bm(L * 48), Cm(L * 48), D(E), bias(E), out(L * E);
  for (auto& v : u) v = nd(g); for (auto& v : z) v = nd(g); for (auto& v : delta) v = 0.3f * nd(g);
  for (int e = 0; e < E; ++e) { for (int n = 0; n < 16; ++n) A[e * 16 + n] = -(n + 1) * (1 + 0.1f * nd(g)); D[e] = 1; bias[e] = std::log(std::expm1(0.001f + 0.099f * (e % 97) / 97.f)); }
  for (auto& v : Bm) v = nd(g); for (auto& v : Cm) v = nd(g);
  P p{L, E, ldx, u.data(), delta.data(), z.data(), A.data(), Bm.data(), Cm.data(), D.data(), bias.data(), out.data()};
  K ks[] = {kernel<0>, kernel<4>, kernel<8>, kernel<16>, kernel<32>};
  const char* names[] = {"current", "tabexp", "intscale", "tab+int", "no-exp"};
  const int nk = 5;
  // accuracy vs current
  std::vector<float> ref(L * E);
  kernel<0>(p); ref = out;
  for (int v = 1; v < nk; ++v) { ks[v](p); double m = 0; for (int i = 0; i < L * E; ++i) m = std::max(m, (double)std::fabs(out[i] - ref[i]) / (std::fabs(ref[i]) + 1e-3)); printf("%s max rel diff %.2e\n", names[v], m); }
  std::vector<std::vector<double>> t(nk);
  for (int r = 0; r < 31; ++r)
    for (int v = 0; v < nk; ++v) {
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < 20; ++it) ks[v](p);
      t[v].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 20 * 1e6);
    }
  std::vector<double> base = t[0]; 
  for (int v = 0; v < nk; ++v) {
    std::vector<double> ratio; for (int r = 0; r < 31; ++r) ratio.push_back(t[v][r] / base[r]);
    std::sort(ratio.begin(), ratio.end()); auto tt = t[v]; std::sort(tt.begin(), tt.end());
    printf("%-10s median %.1f us  ratio %.3f (IQR %.3f-%.3f)\n", names[v], tt[15], ratio[15], ratio[7], ratio[23]);
  }
}
