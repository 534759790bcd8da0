// Scan kernels on an AVX2 CPU, one thread, alternating calls in one process: the rows kernels (16 states of one
// channel in two 8-lane halves; what AVX2 builds ran before) against the lanes kernels (16 channels in the lanes
// as two 8-lane halves, as on AVX-512) and lanes variants that advance P of the 16 states per pass (P = 16, 8, 4),
// so that fewer 256-bit registers are live (AVX2 has 16).
//   g++ -O3 -march=native -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math -fopenmp -std=c++17 \
//       -DSCAN_SOURCE='"src/dyvm/kernels/csrc/selective_scan.cpp"' lanes_avx2_ab.cpp -o /tmp/lanes_ab
//   /tmp/lanes_ab fwd|bwd REPS ROUNDS B E L
#define DYVM_SCAN_STANDALONE 1
#include SCAN_SOURCE
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>
namespace {
// forward_lanes16 with the states advanced P at a time (16 / P passes over the sequence; y summed in Y between them)
template <int P>
void forward_lanes_p(const Args<float>& a, const StridedOut<float>& out, int64_t k0, int64_t k1) {
  const int64_t L = a.L, nblk = a.E / 16;
  alignas(64) float At2[256];
  Scratch<float> sc(3 * 16 * L);
  float* __restrict__ DT = sc.base;
  float* __restrict__ DTU = DT + 16 * L;
  float* __restrict__ Y = DTU + 16 * L;
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t b = k / nblk, e0 = (k % nblk) * 16;
    lanes_A(a.A, e0, At2, nullptr);
    const v16f bias = a.bias ? load16(a.bias + e0) : v16f{};
    const v16f Dv = a.D ? load16(a.D + e0) : v16f{};
    const float* up = a.u.p + b * a.u.sb + e0;
    const float* dp = a.delta.p + b * a.delta.sb + e0;
    const float* zp = a.z.p + b * a.z.sb + e0;
    float* op = out.p + b * out.sb + e0;
    const float* Bb = a.Bm + b * a.sBb;
    const float* Cb = a.Cm + b * a.sCb;
    for (int64_t s = 0; s < L; ++s) {
      const int64_t t = a.reverse ? L - 1 - s : s;
      store16(DT + 16 * s, load16(dp + t * a.delta.sl) + bias);
      store16(DTU + 16 * s, load16(up + t * a.u.sl));
    }
#pragma omp simd
    for (int64_t i = 0; i < 16 * L; ++i) {
      const float dt = softplus_f(DT[i]);
      DT[i] = dt;
      DTU[i] *= dt;
    }
    for (int pass = 0; pass < 16 / P; ++pass) {
      v16f h[P] = {};
      for (int64_t s = 0; s < L; ++s) {
        const int64_t t = a.reverse ? L - 1 - s : s;
        const v16f dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s);
        const float* Bt = Bb + t * a.sBl + P * pass;
        const float* Ct = Cb + t * a.sCl + P * pass;
        v16f sum[2] = {pass ? load16(Y + 16 * s) : Dv * load16(up + t * a.u.sl), {}};
#pragma GCC unroll 16
        for (int m = 0; m < P; ++m) {
          h[m] = exp2_v16(load16(At2 + 16 * (P * pass + m)) * dt) * h[m] + dtu * Bt[m];
          sum[m % 2] += h[m] * Ct[m];
        }
        store16(Y + 16 * s, sum[0] + sum[1]);
      }
    }
    for (int64_t s = 0; s < L; ++s) store16(DT + 16 * s, load16(zp + (a.reverse ? L - 1 - s : s) * a.z.sl));
#pragma omp simd
    for (int64_t i = 0; i < 16 * L; ++i) {
      const float zv = DT[i];
      Y[i] = Y[i] * (zv * sigmoid_f(zv));
    }
    for (int64_t s = 0; s < L; ++s) store16(op + (a.reverse ? L - 1 - s : s) * out.sl, load16(Y + 16 * s));
  }
}

struct Data {
  int64_t B, E, L, N = 16;
  std::vector<float> u, d, z, A, BC, D, bias, g;
  Args<float> a;
  Data(int64_t B_, int64_t E_, int64_t L_) : B(B_), E(E_), L(L_) {
    std::mt19937 gen(0);
    std::normal_distribution<float> nd;
    u.resize(B * L * E); d.resize(B * L * E); z.resize(B * L * E); g.resize(B * L * E);
    A.resize(E * N); BC.resize(B * L * 2 * N); D.resize(E); bias.resize(E);
    for (auto& x : u) x = nd(gen);
    for (auto& x : d) x = 0.5f * nd(gen);
    for (auto& x : z) x = nd(gen);
    for (auto& x : g) x = nd(gen);
    for (auto& x : BC) x = nd(gen);
    for (auto& x : A) x = -std::abs(nd(gen)) * 2;
    for (auto& x : D) x = nd(gen);
    for (auto& x : bias) x = nd(gen);
    a.u = {u.data(), L * E, 1, E}; a.delta = {d.data(), L * E, 1, E}; a.z = {z.data(), L * E, 1, E};
    a.A = A.data(); a.Bm = BC.data(); a.Cm = BC.data() + N; a.sBb = L * 2 * N; a.sBl = 2 * N; a.sCb = L * 2 * N;
    a.sCl = 2 * N; a.D = D.data(); a.bias = bias.data(); a.batch = B; a.E = E; a.L = L; a.N = N;
    a.softplus = true; a.reverse = false;
  }
};

struct Bwd {  // gradient buffers of one call
  std::vector<float> du, dd, dz, dA, dB, dC, dD, db;
  Grads<float> g;
  Bwd(const Data& x) {
    const int64_t n = x.B * x.L * x.E;
    du.assign(n, 0); dd.assign(n, 0); dz.assign(n, 0); dA.assign(x.E * 16, 0);
    dB.assign(x.B * x.L * 16, 0); dC.assign(x.B * x.L * 16, 0); dD.assign(x.E, 0); db.assign(x.E, 0);
    g.du = {du.data(), x.L * x.E, 1, x.E}; g.ddelta = {dd.data(), x.L * x.E, 1, x.E}; g.dz = {dz.data(), x.L * x.E, 1, x.E};
    g.dA = dA.data(); g.dB = dB.data(); g.dC = dC.data(); g.dD = dD.data(); g.dbias = db.data();
  }
  void zero() {
    std::fill(dA.begin(), dA.end(), 0.f); std::fill(dB.begin(), dB.end(), 0.f); std::fill(dC.begin(), dC.end(), 0.f);
    std::fill(dD.begin(), dD.end(), 0.f); std::fill(db.begin(), db.end(), 0.f);
  }
};

double maxdiff(const std::vector<float>& x, const std::vector<float>& y) {
  double m = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) { m = std::max(m, (double)std::abs(x[i] - y[i])); s = std::max(s, (double)std::abs(x[i])); }
  if (s == 0) { printf("(all zero) "); return m; }
  return m / s;
}
}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argv[1];
  const int reps = atoi(argv[2]), rounds = atoi(argv[3]);
  Data x(atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
  const Args<float>& a = x.a;
  const int64_t rows = x.B * x.E, units = x.B * (x.E / 16);
  std::vector<std::string> names;
  std::vector<std::function<void()>> arms;
  std::vector<std::vector<float>> outs;
  std::vector<Bwd> grads;
  if (mode == "fwd") {
    names = {"rows_n16", "lanes16", "lanes_p8", "lanes_p4"};
    outs.assign(4, std::vector<float>(x.B * x.L * x.E));
    auto o = [&](int i) { return StridedOut<float>{outs[i].data(), x.L * x.E, 1, x.E}; };
    arms = {[&, o] { forward_rows_n16(a, o(0), 0, rows); }, [&, o] { forward_lanes16(a, o(1), 0, units); },
            [&, o] { forward_lanes_p<8>(a, o(2), 0, units); }, [&, o] { forward_lanes_p<4>(a, o(3), 0, units); }};
  } else {
    Strided<float> go{x.g.data(), x.L * x.E, 1, x.E};
    names = {"rows_n16", "lanes16"};
    grads.reserve(2);  // in place: each Grads points into its own vectors
    grads.emplace_back(x);
    grads.emplace_back(x);
    arms = {[&, go] { grads[0].zero(); backward_chunk_n16(a, go, grads[0].g, 0, 0, x.E); },
            [&, go] { grads[1].zero(); backward_lanes16(a, go, grads[1].g, 0, 0, x.E); }};
  }
  for (auto& f : arms) f();
  for (size_t i = 1; i < arms.size(); ++i) {
    if (mode == "fwd") printf("%s vs rows: max |diff| / max |y| %.2e\n", names[i].c_str(), maxdiff(outs[0], outs[i]));
    else printf("%s vs rows: du %.2e dΔ %.2e dz %.2e dA %.2e dB %.2e dC %.2e\n", names[i].c_str(),
                maxdiff(grads[0].du, grads[i].du), maxdiff(grads[0].dd, grads[i].dd), maxdiff(grads[0].dz, grads[i].dz),
                maxdiff(grads[0].dA, grads[i].dA), maxdiff(grads[0].dB, grads[i].dB), maxdiff(grads[0].dC, grads[i].dC));
  }
  const size_t K = arms.size();
  std::vector<std::vector<double>> ratio(K);
  std::vector<double> total(K, 0);
  for (int r = 0; r < rounds; ++r) {
    std::vector<double> t(K, 0);
    for (int i = 0; i < reps; ++i)
      for (size_t k = 0; k < K; ++k) {
        const size_t j = (k + r) % K;  // rotate the order each round
        auto t0 = std::chrono::steady_clock::now();
        arms[j]();
        t[j] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    for (size_t k = 0; k < K; ++k) { ratio[k].push_back(t[k] / t[0]); total[k] += t[k]; }
  }
  printf("%s B %ld E %ld L %ld, %d rounds of %d calls; time / rows_n16 per round, median (min-max):\n", mode.c_str(),
         (long)x.B, (long)x.E, (long)x.L, rounds, reps);
  for (size_t k = 0; k < K; ++k) {
    auto v = ratio[k];
    std::sort(v.begin(), v.end());
    printf("  %-9s %8.3f ms/call  %.3f (%.3f-%.3f)\n", names[k].c_str(), total[k] / rounds / reps * 1e3, v[v.size() / 2],
           v.front(), v.back());
  }
}
