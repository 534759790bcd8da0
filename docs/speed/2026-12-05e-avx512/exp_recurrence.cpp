// The lanes scan forward recurrence alone (16 states x 16 lanes, L 197), one thread: V0 exp2 of degree 6 (before
// eb84946), V1 a table of 2^(j/16) + cubic, V2 degree 5 (now), V3 degree 6 with integer exponent arithmetic instead
// of vscalefps, V4 no exponential. Cycles at 3.65 GHz. The special-value lines print degree 5 and degree 6 side by side.
// g++ -O3 -march=native -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math exp_recurrence.cpp -o er && ./er
#include <immintrin.h>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <chrono>
#include <vector>
#include <random>
typedef float v16f __attribute__((vector_size(64)));
static inline v16f load16(const float* p){v16f v;std::memcpy(&v,p,64);return v;}
static inline void store16(float* p, v16f v){std::memcpy(p,&v,64);}
static inline __attribute__((always_inline)) v16f exp2_cur(v16f t){
  const __m512 tt=(__m512)t;
  const v16f f=(v16f)_mm512_reduce_ps(tt,_MM_FROUND_TO_NEG_INF|_MM_FROUND_NO_EXC);
  v16f p = v16f{} + 2.170225489e-04f;
  p = p * f + 1.243968843e-03f; p = p * f + 9.678840637e-03f; p = p * f + 5.548334122e-02f;
  p = p * f + 2.402298301e-01f; p = p * f + 6.931470037e-01f; p = p * f + 1.0f;
  return (v16f)_mm512_scalef_ps((__m512)p, tt);
}
// table: 2^(j/16) with j<<19 subtracted from its bits
static __m512i TAB;
static inline __attribute__((always_inline)) v16f exp2_tab(v16f t){
  __m512 tt=_mm512_min_ps((__m512)t,_mm512_set1_ps(128.0f));
  const __mmask16 ok=_mm512_cmp_ps_mask(tt,_mm512_set1_ps(-126.0f),_CMP_NLT_UQ);
  const __m512 magic=_mm512_set1_ps(1.5f*524288.0f);
  __m512 s=_mm512_add_ps(tt,magic);
  __m512 kf=_mm512_sub_ps(s,magic);
  __m512 r=_mm512_sub_ps(tt,kf);           // [-1/32,1/32]
  __m512i si=_mm512_castps_si512(s);
  __m512i T=_mm512_permutexvar_epi32(si,TAB);
  __m512i sc=_mm512_add_epi32(T,_mm512_slli_epi32(si,19));
  // 2^r ~ 1 + r(c1 + r(c2 + r c3))
  __m512 p=_mm512_fmadd_ps(r,_mm512_set1_ps(0.05550410866f),_mm512_set1_ps(0.2402265070f));
  p=_mm512_fmadd_ps(r,p,_mm512_set1_ps(0.6931471806f));
  p=_mm512_fmadd_ps(r,p,_mm512_set1_ps(1.0f));
  return (v16f)_mm512_maskz_mul_ps(ok,_mm512_castsi512_ps(sc),p);
}
static inline __attribute__((always_inline)) v16f exp2_deg5(v16f t){
  const __m512 tt=(__m512)t;
  const v16f f=(v16f)_mm512_reduce_ps(tt,_MM_FROUND_TO_NEG_INF|_MM_FROUND_NO_EXC);
  v16f p = v16f{} + 1.867216110e-03f;
  p = p * f + 9.016941487e-03f; p = p * f + 5.579984914e-02f;
  p = p * f + 2.401645385e-01f; p = p * f + 6.931512913e-01f; p = p * f + 1.0f;
  return (v16f)_mm512_scalef_ps((__m512)p, tt);
}
static inline __attribute__((always_inline)) v16f exp2_noscalef(v16f t){
  const __m512 tt=(__m512)t;
  const __m512 fl=_mm512_roundscale_ps(tt,_MM_FROUND_TO_NEG_INF|_MM_FROUND_NO_EXC);
  const v16f f=(v16f)_mm512_sub_ps(tt,fl);
  v16f p = v16f{} + 2.170225489e-04f;
  p = p * f + 1.243968843e-03f; p = p * f + 9.678840637e-03f; p = p * f + 5.548334122e-02f;
  p = p * f + 2.402298301e-01f; p = p * f + 6.931470037e-01f; p = p * f + 1.0f;
  __m512i n=_mm512_slli_epi32(_mm512_cvtps_epi32(fl),23);
  return (v16f)_mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512((__m512)p),n));
}
static inline __attribute__((always_inline)) v16f exp2_noexp(v16f t){ return t; }
template<int V> __attribute__((noinline)) void rec(const float* At2,const float* DT,const float* DTU,const float* B,const float* C,float* Y,long L){
  v16f h[16]={};
  for(long s=0;s<L;++s){
    const v16f dt=load16(DT+16*s), dtu=load16(DTU+16*s);
    const float* Bt=B+16*s; const float* Ct=C+16*s;
    v16f sum[4]={};
#pragma GCC unroll 16
    for(int n=0;n<16;++n){
      v16f tt=load16(At2+16*n)*dt; v16f e = V==0? exp2_cur(tt) : V==1? exp2_tab(tt): V==2? exp2_deg5(tt): V==3? exp2_noscalef(tt): exp2_noexp(tt);
      h[n]=e*h[n]+dtu*Bt[n];
      sum[n%4]+=h[n]*Ct[n];
    }
    store16(Y+16*s,(sum[0]+sum[1])+(sum[2]+sum[3]));
  }
}
int main(){
  int tab[16]; for(int j=0;j<16;++j){ float v=std::exp2((double)j/16); int b; memcpy(&b,&v,4); tab[j]=b-(j<<19);} TAB=_mm512_loadu_si512(tab);
  // accuracy
  double maxrel=0, maxrel2=0; std::mt19937 g(1); std::uniform_real_distribution<float> U(-125,127);
  for(int i=0;i<2000000;i++){ float t[16]; for(int k=0;k<16;k++) t[k]=(i%2? U(g): U(g)/100); v16f a=exp2_deg5(load16(t)), b=exp2_cur(load16(t));
    for(int k=0;k<16;k++){ double ref=std::exp2((double)t[k]); double r1=std::fabs(a[k]-ref)/ref, r2=std::fabs(b[k]-ref)/ref; if(r1>maxrel)maxrel=r1; if(r2>maxrel2)maxrel2=r2;}}
  printf("max rel err degree 5 %.3g degree 6 %.3g\n",maxrel,maxrel2);
  float ts[16]={-200,-127,-126,-125.9f,0,-0.0f,127.9f,128,200,NAN,INFINITY,-INFINITY,-1e-30f,1,-1,0.5f};
  v16f a=exp2_tab(load16(ts)), b=exp2_cur(load16(ts)); for(int k=0;k<16;k++) printf("%g: %g %g\n",ts[k],a[k],b[k]);
  long L=197; std::vector<float> At2(256),DT(16*L),DTU(16*L),B(16*L),C(16*L),Y(16*L);
  for(auto&x:At2)x=-std::exp(std::normal_distribution<float>(0,1)(g))*1.44f; for(auto&x:DT)x=std::log1p(std::exp(std::normal_distribution<float>(-1,1)(g)));
  for(auto&x:DTU)x=std::normal_distribution<float>(0,1)(g); for(auto&x:B)x=std::normal_distribution<float>(0,1)(g); for(auto&x:C)x=std::normal_distribution<float>(0,1)(g);
  for(int round=0;round<5;round++) for(int V=0;V<5;V++){ auto t0=std::chrono::steady_clock::now(); for(int it=0;it<2000;it++){ auto*a1=At2.data();auto*a2=DT.data();auto*a3=DTU.data();auto*a4=B.data();auto*a5=C.data();auto*a6=Y.data();
 switch(V){case 0: rec<0>(a1,a2,a3,a4,a5,a6,L);break; case 1: rec<1>(a1,a2,a3,a4,a5,a6,L);break; case 2: rec<2>(a1,a2,a3,a4,a5,a6,L);break; case 3: rec<3>(a1,a2,a3,a4,a5,a6,L);break; case 4: rec<4>(a1,a2,a3,a4,a5,a6,L);break;}} double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count(); printf("V%d %.2f ns/step %.1f cyc/step@3.65\n",V,s/2000/L*1e9,s/2000/L*3.65e9);}
}
