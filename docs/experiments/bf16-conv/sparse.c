// Experiment (not product code): a 20%-sparse 1x3x3 conv, 96 -> 48 channels, one 10-row band of
// 128-wide rows, one output channel per micro tile walking its own list of live input channels.
// f32: aligned loads + valignd tap vectors (the shape of e2enc's x86-avx512 sparse kernel).
// bf16 "tap pairs": each input channel of the band is packed once per tile into two planes of
// bf16 pairs, P_h[r][x] = (in[r][x-1], in[r][x]) and P_v[r][x] = (in[r][x+1], in[r+1][x+1]);
// output row r (band rows r, r+1, r+2 with row taps b = 0, 1, 2) is
//   dp(P_h[r], k00|k01) + dp(P_h[r+1], k10|k11) + dp(P_h[r+2], k20|k21)
//   + dp(P_v[r], k02|k12) + dp(P_v[r+2], k22|0):  5 vdpbf16ps for 9 taps, no shuffles.
// Build: gcc -O2 -march=native -DVOX=2 sparse.c -o sparse -lm   (needs avx512_bf16)
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define CIN 96
#define COUT 48
#define W 128
#define ROW (W+16)
#define RB 10
#define RIN (RB+2)
#define VO VOX
#define AL(h,l,k) _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(h), _mm512_castps_si512(l), k))
static int nent[COUT], ent[COUT][CIN];
static void f32_micro(const float *x, const float *w, int o, float *y, int xo){
  __m512 a[RB][VO]; for(int r=0;r<RB;r++)for(int f=0;f<VO;f++)a[r][f]=_mm512_setzero_ps();
  for(int e=0;e<nent[o];e++, w+=9){
    const float *p=x+ent[o][e]*RIN*ROW+xo; // column -8 of row 0 (aligned)
    __m512 wv[9]; for(int t=0;t<9;t++) wv[t]=_mm512_set1_ps(w[t]);
    #pragma GCC unroll 12
    for(int rr=0;rr<RIN;rr++){
      __m512 v[VO+1];
      #pragma GCC unroll 9
      for(int j=0;j<=VO;j++) v[j]=_mm512_load_ps(p+rr*ROW+16*j);
      #pragma GCC unroll 8
      for(int f=0;f<VO;f++){
        __m512 x0=AL(v[f+1],v[f],7), x1=AL(v[f+1],v[f],8), x2=AL(v[f+1],v[f],9);
        #pragma GCC unroll 3
        for(int b=0;b<3;b++){int r=rr-b; if(r<0||r>=RB)continue;
          a[r][f]=_mm512_fmadd_ps(wv[b],x0,a[r][f]); a[r][f]=_mm512_fmadd_ps(wv[3+b],x1,a[r][f]); a[r][f]=_mm512_fmadd_ps(wv[6+b],x2,a[r][f]);}
      }
    }
  }
  for(int r=0;r<RB;r++)for(int f=0;f<VO;f++) _mm512_storeu_ps(y+(o*RB+r)*W+xo+16*f,a[r][f]);
}
// packed: per channel [2][RIN][W] uint32 (P_h then P_v), 64-byte aligned rows
static void bf_micro(const uint32_t *px, const uint32_t *w, int o, float *y, int xo){
  __m512 a[RB][VO]; for(int r=0;r<RB;r++)for(int f=0;f<VO;f++)a[r][f]=_mm512_setzero_ps();
  for(int e=0;e<nent[o];e++, w+=5){
    const uint32_t *ph=px+ent[o][e]*2*RIN*W+xo, *pv=ph+RIN*W;
    __m512bh w0=(__m512bh)_mm512_set1_epi32(w[0]), w1=(__m512bh)_mm512_set1_epi32(w[1]), w2=(__m512bh)_mm512_set1_epi32(w[2]),
             w3=(__m512bh)_mm512_set1_epi32(w[3]), w4=(__m512bh)_mm512_set1_epi32(w[4]);
    #pragma GCC unroll 12
    for(int rr=0;rr<RIN;rr++){
      #pragma GCC unroll 8
      for(int f=0;f<VO;f++){
        __m512bh h=(__m512bh)_mm512_load_si512(ph+rr*W+16*f), v=(__m512bh)_mm512_load_si512(pv+rr*W+16*f);
        // P_h[rr] feeds r = rr+1 (w0 row b=0), rr (b=1), rr-1 (b=2); P_v[rr] feeds r = rr+1 (w3), rr-1 (w4)
        int r;
        r=rr;   if(r<RB) { a[r][f]=_mm512_dpbf16_ps(a[r][f],w0,h); a[r][f]=_mm512_dpbf16_ps(a[r][f],w3,v); }
        r=rr-1; if(r>=0&&r<RB) a[r][f]=_mm512_dpbf16_ps(a[r][f],w1,h);
        r=rr-2; if(r>=0&&r<RB) { a[r][f]=_mm512_dpbf16_ps(a[r][f],w2,h); a[r][f]=_mm512_dpbf16_ps(a[r][f],w4,v); }
      }
    }
  }
  for(int r=0;r<RB;r++)for(int f=0;f<VO;f++) _mm512_storeu_ps(y+(o*RB+r)*W+xo+16*f,a[r][f]);
}
// Packs every channel of the band (rows 0 .. RIN-1; output row r reads band rows r .. r+2).
static void pack(const float *x, uint32_t *px){
  static const uint16_t ix[32]={0,16,1,17,2,18,3,19,4,20,5,21,6,22,7,23,8,24,9,25,10,26,11,27,12,28,13,29,14,30,15,31};
  const __m512i idx=_mm512_loadu_si512(ix);
  for(int c=0;c<CIN;c++){ const float *p=x+c*RIN*ROW+8; uint32_t *ph=px+c*2*RIN*W, *pv=ph+RIN*W;
    for(int r=0;r<RIN;r++) for(int j=0;j<W;j+=16){
      __m512 l=_mm512_loadu_ps(p+r*ROW+j-1), m=_mm512_loadu_ps(p+r*ROW+j);
      _mm512_store_si512(ph+r*W+j,_mm512_permutexvar_epi16(idx,(__m512i)_mm512_cvtne2ps_pbh(m,l)));
      __m512 u=_mm512_loadu_ps(p+r*ROW+j+1), d=(r+1<RIN)?_mm512_loadu_ps(p+(r+1)*ROW+j+1):_mm512_setzero_ps();
      _mm512_store_si512(pv+r*W+j,_mm512_permutexvar_epi16(idx,(__m512i)_mm512_cvtne2ps_pbh(d,u)));
    }}
}
static uint32_t tobf(float f){uint32_t u;memcpy(&u,&f,4);u+=0x7fff+((u>>16)&1);return u>>16;}
int main(){
  float *x=aligned_alloc(64,4*CIN*RIN*ROW); uint32_t *px=aligned_alloc(64,4*CIN*2*RIN*W);
  float *y=aligned_alloc(64,4*COUT*RB*W), *y2=aligned_alloc(64,4*COUT*RB*W);
  srand(3);
  for(int i=0;i<CIN*RIN*ROW;i++){int col=i%ROW; x[i]=(col<8||col>=8+W)?0:(rand()/(float)RAND_MAX-0.5f);}
  float *wf=malloc(4*COUT*CIN*9); uint32_t *wb=malloc(4*COUT*CIN*5); int tot=0;
  for(int o=0;o<COUT;o++){nent[o]=0; for(int c=0;c<CIN;c++) if(rand()%5==0){ent[o][nent[o]]=c;
      float k[3][3]; for(int b=0;b<3;b++)for(int cc=0;cc<3;cc++)k[b][cc]=rand()/(float)RAND_MAX-0.5f;
      float *q=wf+(tot)*9; for(int cc=0;cc<3;cc++)for(int b=0;b<3;b++) q[cc*3+b]=k[b][cc];
      uint32_t *s=wb+tot*5; s[0]=tobf(k[0][0])|tobf(k[0][1])<<16; s[1]=tobf(k[1][0])|tobf(k[1][1])<<16; s[2]=tobf(k[2][0])|tobf(k[2][1])<<16;
      s[3]=tobf(k[0][2])|tobf(k[1][2])<<16; s[4]=tobf(k[2][2]);
      nent[o]++; tot++;}}
  int off[COUT]; {int t=0; for(int o=0;o<COUT;o++){off[o]=t;t+=nent[o];}}
  double b1=1e9,b2=1e9,bp=1e9; int reps=300;
  for(int t=0;t<5;t++){
    double t0=now(); for(int k=0;k<reps;k++) for(int o=0;o<COUT;o++) for(int xo=0;xo<W;xo+=16*VO) f32_micro(x,wf+off[o]*9,o,y,xo);
    double t1=now(); for(int k=0;k<reps;k++){ pack(x,px); for(int o=0;o<COUT;o++) for(int xo=0;xo<W;xo+=16*VO) bf_micro(px,wb+off[o]*5,o,y2,xo);}
    double t2=now(); for(int k=0;k<reps;k++) pack(x,px);
    double t3=now(); if(t1-t0<b1)b1=t1-t0; if(t2-t1<b2)b2=t2-t1; if(t3-t2<bp)bp=t3-t2;}
  double macs=(double)reps*tot*9*RB*W;
  printf("live kernels %d of %d (%.2f)\nf32 sparse : %.1f GFLOP/s\nbf16 sparse: %.1f GFLOP/s (incl. packing: %.1f%% of it)\nspeed-up %.2fx\n",
    tot, CIN*COUT, tot/(double)(CIN*COUT), 2*macs/b1/1e9, 2*macs/b2/1e9, 100*bp/b2, b1/b2);
  double e=0,n=0; for(int i=0;i<COUT*RB*W;i++){e+=(y[i]-y2[i])*(y[i]-y2[i]); n+=y[i]*y[i];}
  printf("rel L2 bf16 vs f32: %.2e\n", __builtin_sqrt(e/n));
}
