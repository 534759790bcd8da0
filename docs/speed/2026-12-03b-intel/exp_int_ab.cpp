// Forward scan kernel A/B, one thread, alternating calls in one process: forward_lanes16 as of 14b9c11 (kernel)
// against v4, the same with 2^t computed by adding the exponent as an integer (magic-number rounding, a shift and an
// integer add; t clamped to [-126, 127]) instead of vrndscaleps / vscalefps. Not kept: 1.11-1.13x the time
// (measured.txt 10). Build from the repository root:
//   g++ -O3 -march=native -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math -fopenmp -std=c++17 -I. \
//       -DSCAN_SOURCE='"src/dyvm/kernels/csrc/selective_scan.cpp"' docs/speed/2026-12-03b-intel/exp_int_ab.cpp -o /tmp/exp_ab
//   /tmp/exp_ab 20 15 197 1 384; /tmp/exp_ab 2 15 50 128 128
#define DYVM_SCAN_STANDALONE 1
#include SCAN_SOURCE
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
namespace {
// 2^t with the exponent added as an integer (clamped to [-126, 127]; no vrndscaleps / vscalefps)
DYVM_INLINE v16f exp2_v16_int(v16f t) {
  const __m512 tt = _mm512_min_ps(_mm512_max_ps(reinterpret_cast<__m512>(t), _mm512_set1_ps(-126.0f)),
                                  _mm512_set1_ps(127.0f));
  const __m512 magic = _mm512_set1_ps(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const __m512 tm = _mm512_add_ps(tt, magic);
  const v16f f = reinterpret_cast<v16f>(_mm512_sub_ps(tt, _mm512_sub_ps(tm, magic)));
  v16f p = v16f{} + 3.069162316e-04f * 0.5f;
  p = p * f + 2.679986243e-03f * 0.5f;
  p = p * f + 1.923697792e-02f * 0.5f;
  p = p * f + 1.110065755e-01f * 0.5f;
  p = p * f + 4.804529378e-01f * 0.5f;
  p = p * f + 1.386294411e+00f * 0.5f;
  p = p * f + 1.0f;
  const __m512i k = _mm512_slli_epi32(_mm512_castps_si512(tm), 23);
  return reinterpret_cast<v16f>(_mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(reinterpret_cast<__m512>(p)), k)));
}
void forward_lanes16_v4(const Args<float>& a, const StridedOut<float>& out, int64_t k0, int64_t k1) {
  const int64_t L = a.L, nblk = a.E / 16;
  alignas(64) float At2[256];  // At2[16 n + lane] = A[d][n] log2 e
  Scratch<float> sc(3 * 16 * L);
  float* __restrict__ DT = sc.base;  // per scan step s, 16 lanes: Δ, then z
  float* __restrict__ DTU = DT + 16 * L;  // Δu
  float* __restrict__ Y = DTU + 16 * L;   // C_t·h_t + D u_t
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t b = k / nblk, e0 = (k % nblk) * 16;
    lanes_A(a.A, e0, At2, nullptr);
    const v16f bias = a.bias ? load16(a.bias + e0) : v16f{};
    const v16f Dv = a.D ? load16(a.D + e0) : v16f{};
    const float* up = a.u.p + b * a.u.sb + e0;
    const float* dp = a.delta.p + b * a.delta.sb + e0;
    const float* zp = a.z.p ? a.z.p + (a.zrows ? a.zrows[b] : b) * a.z.sb + e0 : nullptr;
    float* op = out.p + (a.orows ? a.orows[b] : b) * out.sb + e0;
    const bool acc = a.accumulate;
    const float* Bb = a.Bm + b * a.sBb;
    const float* Cb = a.Cm + b * a.sCb;
    for (int64_t s = 0; s < L; ++s) {  // scan order
      const int64_t t = a.reverse ? L - 1 - s : s;
      store16(DT + 16 * s, load16(dp + t * a.delta.sl) + bias);
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
    v16f h[16] = {};
    for (int64_t s = 0; s < L; ++s) {
      const int64_t t = a.reverse ? L - 1 - s : s;
      const v16f dt = load16(DT + 16 * s), dtu = load16(DTU + 16 * s);
      const float* Bt = Bb + t * a.sBl;
      const float* Ct = Cb + t * a.sCl;
      // C_t·h_t in four running sums (state n into sum n mod 4): a 16-vector product array summed afterwards
      // kept 32 vectors live and spilled the states to the stack every step (0.90x the time without it,
      // docs/speed/2026-12-03b-intel/forward_fma_ab.txt)
      v16f y0 = Dv * load16(up + t * a.u.sl), y1 = {}, y2 = {}, y3 = {};
#pragma GCC unroll 4
      for (int n = 0; n < 16; n += 4) {
        h[n] = exp2_v16_int(load16(At2 + 16 * n) * dt) * h[n] + dtu * Bt[n];
        y0 += h[n] * Ct[n];
        h[n + 1] = exp2_v16_int(load16(At2 + 16 * (n + 1)) * dt) * h[n + 1] + dtu * Bt[n + 1];
        y1 += h[n + 1] * Ct[n + 1];
        h[n + 2] = exp2_v16_int(load16(At2 + 16 * (n + 2)) * dt) * h[n + 2] + dtu * Bt[n + 2];
        y2 += h[n + 2] * Ct[n + 2];
        h[n + 3] = exp2_v16_int(load16(At2 + 16 * (n + 3)) * dt) * h[n + 3] + dtu * Bt[n + 3];
        y3 += h[n + 3] * Ct[n + 3];
      }
      const v16f y = (y0 + y1) + (y2 + y3);
      if (zp)
        store16(Y + 16 * s, y);
      else
        store16(op + t * out.sl, acc ? load16(op + t * out.sl) + y : y);
    }
    if (zp) {  // row_output's formula: (y + D u) silu(z)
      for (int64_t s = 0; s < L; ++s) store16(DT + 16 * s, load16(zp + (a.reverse ? L - 1 - s : s) * a.z.sl));
#pragma omp simd
      for (int64_t i = 0; i < 16 * L; ++i) {
        const float zv = DT[i];
        Y[i] = Y[i] * (zv * sigmoid_f(zv));
      }
      for (int64_t s = 0; s < L; ++s) {
        float* ot = op + (a.reverse ? L - 1 - s : s) * out.sl;
        store16(ot, acc ? load16(ot) + load16(Y + 16 * s) : load16(Y + 16 * s));
      }
    }
  }
}
}  // namespace
int main(int argc, char** argv){
  int64_t B=128,E=128,L=atoi(argv[3]),N=16; int reps=atoi(argv[1]); int rounds=atoi(argv[2]);
  if(argc>4) B=atoi(argv[4]); if(argc>5) E=atoi(argv[5]);
  std::mt19937 g(0); std::normal_distribution<float> nd;
  std::vector<float> u(B*L*E),d(B*L*E),z(B*L*E),o(B*L*E),o2(B*L*E),A(E*N),BC(B*L*2*N),D(E),bias(E);
  for(auto&x:u)x=nd(g); for(auto&x:d)x=0.5f*nd(g); for(auto&x:z)x=nd(g); for(auto&x:BC)x=nd(g);
  for(auto&x:A)x=-std::abs(nd(g))*2; for(auto&x:D)x=nd(g); for(auto&x:bias)x=nd(g);
  Args<float> a;
  a.u={u.data(),L*E,1,E}; a.delta={d.data(),L*E,1,E}; a.z={z.data(),L*E,1,E};
  a.A=A.data(); a.Bm=BC.data(); a.Cm=BC.data()+N; a.sBb=L*2*N; a.sBl=2*N; a.sCb=L*2*N; a.sCl=2*N;
  a.D=D.data(); a.bias=bias.data(); a.batch=B; a.E=E; a.L=L; a.N=N; a.softplus=true; a.reverse=false;
  StridedOut<float> out{o.data(),L*E,1,E}, out2{o2.data(),L*E,1,E};
  int64_t units=B*(E/16);
  forward_lanes16(a,out,0,units); forward_lanes16_v4(a,out2,0,units);
  double md=0,mx=0; for(size_t i=0;i<o.size();i++){md=std::max(md,(double)std::abs(o[i]-o2[i])); mx=std::max(mx,(double)std::abs(o[i]));}
  printf("B %ld E %ld L %ld: bit-identical %d, max |diff| %g of max |y| %g\n", (long)B,(long)E,(long)L, memcmp(o.data(),o2.data(),o.size()*4)==0, md, mx);
  std::vector<double> ratios; double t1s=0,t2s=0;
  for(int r=0;r<rounds;r++){
    double t1=0,t2=0;
    for(int i=0;i<reps;i++){
      auto t0=std::chrono::steady_clock::now(); forward_lanes16(a,out,0,units);
      auto tm=std::chrono::steady_clock::now(); forward_lanes16_v4(a,out2,0,units);
      auto te=std::chrono::steady_clock::now();
      t1+=std::chrono::duration<double>(tm-t0).count(); t2+=std::chrono::duration<double>(te-tm).count();
    }
    ratios.push_back(t2/t1); t1s+=t1; t2s+=t2;
  }
  std::sort(ratios.begin(),ratios.end());
  printf("kernel %.3f ms, v4 %.3f ms per call; v4/kernel per round: median %.3f (min %.3f, max %.3f, %d rounds)\n",
         t1s/reps/rounds*1e3, t2s/reps/rounds*1e3, ratios[ratios.size()/2], ratios.front(), ratios.back(), rounds);
}
