// Session 25 (from session 24's fwd_exp_ab.cpp): AVX2 exp2 variants in the lanes forward, one thread, alternating
// calls: cur (exp2_v8 as committed at f2d6607), nohi (its upper clamp dropped), d5 (a degree-5 polynomial, no upper
// clamp), iadd (the scale added into the exponent bits). exp2_tab and softplus_nodiv are session 24's, unused here
// (exp2_tab still needs -DC1 -DC2 -DC3 to compile). Usage: ./a.out REPS ROUNDS B E L
#define DYVM_SCAN_STANDALONE 1
#include SCAN_SOURCE
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>
namespace {
DYVM_INLINE __m256 exp2_tab(__m256 t) {
  t = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-125.0f), t));
  const __m256 magic = _mm256_set1_ps(1572864.0f);  // 1.5 * 2^20: v's ulp is 1/8
  const __m256 v = _mm256_add_ps(t, magic);
  const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(v, magic));  // [-1/16, 1/16]
  const __m256 tab = _mm256_setr_ps(1.0f, 1.09050773266525766f, 1.18920711500272107f, 1.29683955465100967f,
                                    1.41421356237309505f, 1.54221082540794082f, 1.68179283050742909f,
                                    1.83400808640934246f);
  const __m256i vb = _mm256_castps_si256(v);
  const __m256 T = _mm256_permutevar8x32_ps(tab, vb);  // low 3 bits of v's mantissa: j
  __m256 p = _mm256_set1_ps(C3);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C2));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(C1));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256 r = _mm256_mul_ps(T, p);
  const __m256i k = _mm256_slli_epi32(_mm256_and_si256(vb, _mm256_set1_epi32(~7)), 20);  // (floor(8t) >> 3) << 23
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(r), k));
}
DYVM_INLINE __m256 exp2_iadd(__m256 t) {  // exp2_v8's polynomial, 2^n added into the exponent bits
  t = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-125.0f), t));
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 v = _mm256_add_ps(t, magic);
  const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(v, magic));
  __m256 p = _mm256_set1_ps(3.069162316e-04f * 0.5f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.679986243e-03f * 0.5f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.923697792e-02f * 0.5f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.110065755e-01f * 0.5f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(4.804529378e-01f * 0.5f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.386294411e+00f * 0.5f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i k = _mm256_slli_epi32(_mm256_castps_si256(v), 23);  // n << 23 (mod 2^32)
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), k));
}

DYVM_INLINE __m256 exp2_nohi(__m256 t) {  // exp2_v8 without the upper clamp (t <= 0 known)
  t = _mm256_max_ps(_mm256_set1_ps(-126.0f), t);
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
DYVM_INLINE __m256 exp2_d5(__m256 t) {  // degree-5 minimax-ish (Taylor-adjusted) polynomial, no upper clamp
  t = _mm256_max_ps(_mm256_set1_ps(-126.0f), t);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 v = _mm256_add_ps(t, magic);
  const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(v, magic));
  __m256 p = _mm256_set1_ps(2.0f * 0.001326472731307149f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0f * 0.009671512991189957f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0f * 0.05550733581185341f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0f * 0.24022242426872253f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0f * 0.6931470036506653f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0f));
  const __m256i bits = _mm256_sub_epi32(_mm256_castps_si256(v), _mm256_set1_epi32(0x4B400000 - 126));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(bits, 23)));
}
struct ExpNohi { static DYVM_INLINE v16f e(v16f t) { return {exp2_nohi(t.lo), exp2_nohi(t.hi)}; } };
struct ExpD5 { static DYVM_INLINE v16f e(v16f t) { return {exp2_d5(t.lo), exp2_d5(t.hi)}; } };
struct ExpCur { static DYVM_INLINE v16f e(v16f t) { return exp2_v16(t); } };
struct ExpTab { static DYVM_INLINE v16f e(v16f t) { return {exp2_tab(t.lo), exp2_tab(t.hi)}; } };
struct ExpIadd { static DYVM_INLINE v16f e(v16f t) { return {exp2_iadd(t.lo), exp2_iadd(t.hi)}; } };

DYVM_INLINE float softplus_nodiv(float x) {  // timing probe only: the division replaced by a product (wrong values)
  const float mx = x > 0.0f ? x : 0.0f;
  const float e = exp_f(-std::fabs(x));
  const float s = e * 0.4f, s2 = s * s;
  float p = 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f; p = p * s2 + 1.0f / 11.0f; p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f; p = p * s2 + 1.0f / 5.0f; p = p * s2 + 1.0f / 3.0f; p = p * s2 + 1.0f;
  return mx + (s + s) * p;
}
struct SpNodiv {};
template <class X, class SP = void>
void fwd_v(const Args<float>& a, const StridedOut<float>& out, int64_t k0, int64_t k1) {
  const int64_t L = a.L, nblk = a.E / 16;
  alignas(64) float At2[256];
  Scratch<float> sc(3 * 16 * L);
  float* __restrict__ DT = sc.base;
  float* __restrict__ DTU = DT + 16 * L;
  float* __restrict__ Y = DTU + 16 * L;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t b = k / nblk, e0 = (k % nblk) * 16;
    lanes_A(a.A, e0, At2, nullptr);
    const v16f bias = load16(a.bias + e0);
    const v16f Dv = load16(a.D + e0);
    const float* up = a.u.p + b * a.u.sb + e0;
    const float* dp = a.delta.p + b * a.delta.sb + e0;
    const float* zp = a.z.p + b * a.z.sb + e0;
    float* op = out.p + b * out.sb + e0;
    const float* Bb = a.Bm + b * a.sBb;
    const float* Cb = a.Cm + b * a.sCb;
    for (int64_t s = 0; s < L; ++s) {
      store16(DT + 16 * s, load16(dp + s * a.delta.sl) + bias);
      store16(DTU + 16 * s, load16(up + s * a.u.sl));
    }
#pragma omp simd
    for (int64_t i = 0; i < 16 * L; ++i) {
      const float dt = std::is_same<SP, SpNodiv>::value ? softplus_nodiv(DT[i]) : softplus_f(DT[i]);
      DT[i] = dt;
      DTU[i] *= dt;
    }
    v16f h[16] = {};
    for (int64_t s = 0; s < L; ++s) {
      const v16f dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s);
      const float* Bt = Bb + s * a.sBl;
      const float* Ct = Cb + s * a.sCl;
      v16f sum[4] = {};
#pragma GCC unroll 16
      for (int n = 0; n < 16; ++n) {
        h[n] = X::e(load16(At2 + 16 * n) * dt) * h[n] + dtu * Bt[n];
        sum[n % 4] += h[n] * Ct[n];
      }
      store16(Y + 16 * s, ((sum[0] + sum[1]) + (sum[2] + sum[3])) + Dv * load16(up + s * a.u.sl));
    }
    for (int64_t s = 0; s < L; ++s) store16(DT + 16 * s, load16(zp + s * a.z.sl));
#pragma omp simd
    for (int64_t i = 0; i < 16 * L; ++i) {
      const float zv = DT[i];
      Y[i] = Y[i] * (zv * sigmoid_f(zv));
    }
    for (int64_t s = 0; s < L; ++s) store16(op + s * out.sl, load16(Y + 16 * s));
  }
}
}  // namespace

int main(int argc, char** argv) {
  const int reps = atoi(argv[1]), rounds = atoi(argv[2]);
  const int64_t B = atoi(argv[3]), E = atoi(argv[4]), L = atoi(argv[5]), N = 16;
  // exp accuracy over a grid
  {
    double m[3] = {0, 0, 0};
    for (double x = -124.9; x < 0; x += 0.000731) {
      const __m256 t = _mm256_set1_ps((float)x);
      const double ref = std::exp2((double)(float)x);
      float o[3][8];
      _mm256_storeu_ps(o[0], exp2_v8(t)); _mm256_storeu_ps(o[1], exp2_nohi(t)); _mm256_storeu_ps(o[2], exp2_d5(t));
      for (int i = 0; i < 3; ++i) m[i] = std::max(m[i], std::abs(o[i][0] / ref - 1));
    }
    printf("max rel err on [-124.9, 0): cur %.2e nohi %.2e d5 %.2e\n", m[0], m[1], m[2]);
    float o[8];
    _mm256_storeu_ps(o, exp2_tab(_mm256_set1_ps(-300.f))); printf("tab(-300) %g ", o[0]);
    _mm256_storeu_ps(o, exp2_v8(_mm256_set1_ps(-300.f))); printf("cur(-300) %g\n", o[0]);
  }
  std::mt19937 gen(0);
  std::normal_distribution<float> nd;
  std::vector<float> u(B * L * E), d(B * L * E), z(B * L * E), A(E * N), BC(B * L * 2 * N), D(E), bias(E);
  for (auto& x : u) x = nd(gen);
  for (auto& x : d) x = 0.5f * nd(gen);
  for (auto& x : z) x = nd(gen);
  for (auto& x : BC) x = nd(gen);
  for (int64_t e = 0; e < E; ++e) for (int n = 0; n < N; ++n) A[e * N + n] = -(n + 1) * std::exp(0.3f * nd(gen));
  for (auto& x : D) x = nd(gen);
  for (auto& x : bias) x = nd(gen) - 2;
  Args<float> a;
  a.u = {u.data(), L * E, 1, E}; a.delta = {d.data(), L * E, 1, E}; a.z = {z.data(), L * E, 1, E};
  a.A = A.data(); a.Bm = BC.data(); a.Cm = BC.data() + N; a.sBb = L * 2 * N; a.sBl = 2 * N; a.sCb = L * 2 * N;
  a.sCl = 2 * N; a.D = D.data(); a.bias = bias.data(); a.batch = B; a.E = E; a.L = L; a.N = N;
  a.softplus = true; a.reverse = false;
  const int64_t units = B * (E / 16);
  std::vector<std::vector<float>> outs(4, std::vector<float>(B * L * E));
  auto o = [&](int i) { return StridedOut<float>{outs[i].data(), L * E, 1, E}; };
  std::vector<std::string> names = {"cur", "nohi", "d5", "iadd"};
  std::vector<std::function<void()>> arms = {[&] { fwd_v<ExpCur>(a, o(0), 0, units); },
                                             [&] { fwd_v<ExpNohi>(a, o(1), 0, units); },
                                             [&] { fwd_v<ExpD5>(a, o(2), 0, units); },
                                             [&] { fwd_v<ExpIadd>(a, o(3), 0, units); }};
  for (auto& f : arms) f();
  for (int i = 1; i < 4; ++i) {
    double mx = 0, s = 0;
    for (size_t j = 0; j < outs[0].size(); ++j) { mx = std::max(mx, (double)std::abs(outs[0][j] - outs[i][j])); s = std::max(s, (double)std::abs(outs[0][j])); }
    printf("%s vs cur: max|diff|/max|y| %.2e\n", names[i].c_str(), mx / s);
  }
  const size_t K = arms.size();
  std::vector<std::vector<double>> ratio(K);
  for (int r = 0; r < rounds; ++r) {
    std::vector<double> t(K, 0);
    for (int i = 0; i < reps; ++i)
      for (size_t kk = 0; kk < K; ++kk) {
        const size_t j = (kk + r) % K;
        auto t0 = std::chrono::steady_clock::now();
        arms[j]();
        t[j] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    for (size_t kk = 0; kk < K; ++kk) ratio[kk].push_back(t[kk] / t[0]);
    if (r == 0) printf("cur %.3f ms/call\n", t[0] / reps * 1e3);
  }
  printf("B %ld E %ld L %ld: time / cur, median (min-max) of %d rounds\n", (long)B, (long)E, (long)L, rounds);
  for (size_t kk = 1; kk < K; ++kk) {
    auto v = ratio[kk]; std::sort(v.begin(), v.end());
    printf("  %-5s %.3f (%.3f-%.3f)\n", names[kk].c_str(), v[v.size() / 2], v.front(), v.back());
  }
}
