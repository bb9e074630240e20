// Experiment (not product code): a dense 1x3x3 conv, 96 -> 48 channels, one 4-row band of
// 128-wide rows; micro tiles of 2 outputs x 4 rows x 32 columns (e2enc's x86-avx512 blocking).
// f32: _mm512_fmadd_ps over input channels. bf16: the band is packed once per tile into pairs of
// input channels (c, c+1) interleaved as bf16 (vcvtne2ps2bf16 + vpermw), the weights into pairs
// (w[o][c], w[o][c+1]); each vdpbf16ps then does two channels' MACs for 16 columns, f32 accumulation.
// Build: gcc -O2 -march=native dense.c -o dense -lm   (needs avx512_bf16)
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
#define ROW (W+16)   /* 8 left pad, 8 right pad */
#define RB 4
#define RIN (RB+2)
// f32: band [CIN][RIN][ROW]; weights [ob-block][CIN][cc][b][2]
static void f32_micro(const float *x, const float *w, float *y, int xoff) {
  __m512 a[2][RB][2];
  for(int o=0;o<2;o++)for(int r=0;r<RB;r++)for(int f=0;f<2;f++)a[o][r][f]=_mm512_setzero_ps();
  for(int c=0;c<CIN;c++, w+=18){
    const float *p = x + c*RIN*ROW + 8 + xoff - 1;
    #pragma GCC unroll 3
    for(int cc=0;cc<3;cc++){
      __m512 wv[2][3];
      for(int o=0;o<2;o++)for(int b=0;b<3;b++) wv[o][b]=_mm512_set1_ps(w[(cc*3+b)*2+o]);
      #pragma GCC unroll 6
      for(int rr=0;rr<RIN;rr++){
        #pragma GCC unroll 2
        for(int f=0;f<2;f++){
          __m512 v=_mm512_loadu_ps(p+rr*ROW+16*f+cc);
          #pragma GCC unroll 3
          for(int b=0;b<3;b++){ int r=rr-b; if(r<0||r>=RB) continue;
            for(int o=0;o<2;o++) a[o][r][f]=_mm512_fmadd_ps(wv[o][b],v,a[o][r][f]); }
        }
      }
    }
  }
  for(int o=0;o<2;o++)for(int r=0;r<RB;r++)for(int f=0;f<2;f++) _mm512_storeu_ps(y+(o*RB+r)*W+xoff+16*f,a[o][r][f]);
}
// bf16: band [CIN/2][RIN][ROW] of uint32 pairs; weights [CIN/2][cc][b][2 outs] uint32 pairs
static void bf_micro(const uint32_t *x, const uint32_t *w, float *y, int xoff) {
  __m512 a[2][RB][2];
  for(int o=0;o<2;o++)for(int r=0;r<RB;r++)for(int f=0;f<2;f++)a[o][r][f]=_mm512_setzero_ps();
  for(int c=0;c<CIN/2;c++, w+=18){
    const uint32_t *p = x + c*RIN*ROW + 8 + xoff - 1;
    #pragma GCC unroll 3
    for(int cc=0;cc<3;cc++){
      __m512bh wv[2][3];
      for(int o=0;o<2;o++)for(int b=0;b<3;b++) wv[o][b]=(__m512bh)_mm512_set1_epi32(w[(cc*3+b)*2+o]);
      #pragma GCC unroll 6
      for(int rr=0;rr<RIN;rr++){
        #pragma GCC unroll 2
        for(int f=0;f<2;f++){
          __m512bh v=(__m512bh)_mm512_loadu_si512(p+rr*ROW+16*f+cc);
          #pragma GCC unroll 3
          for(int b=0;b<3;b++){ int r=rr-b; if(r<0||r>=RB) continue;
            for(int o=0;o<2;o++) a[o][r][f]=_mm512_dpbf16_ps(a[o][r][f],wv[o][b],v); }
        }
      }
    }
  }
  for(int o=0;o<2;o++)for(int r=0;r<RB;r++)for(int f=0;f<2;f++) _mm512_storeu_ps(y+(o*RB+r)*W+xoff+16*f,a[o][r][f]);
}
// pack f32 band -> bf16 pairs (channel c, c+1 interleaved)
static void pack(const float *x, uint32_t *px){
  static const uint16_t ix[32]={0,16,1,17,2,18,3,19,4,20,5,21,6,22,7,23,8,24,9,25,10,26,11,27,12,28,13,29,14,30,15,31}; const __m512i idx=_mm512_loadu_si512(ix);
  for(int c=0;c<CIN/2;c++) for(int r=0;r<RIN;r++) for(int j=0;j<ROW;j+=16){
    __m512 a=_mm512_loadu_ps(x+(2*c)*RIN*ROW+r*ROW+j), b=_mm512_loadu_ps(x+(2*c+1)*RIN*ROW+r*ROW+j);
    __m512i ab=(__m512i)_mm512_cvtne2ps_pbh(b,a); // low 16 = a, high 16 = b
    _mm512_storeu_si512(px+c*RIN*ROW+r*ROW+j,_mm512_permutexvar_epi16(idx,ab));
  }
}
static uint16_t tobf(float f){uint32_t u;memcpy(&u,&f,4);u+=0x7fff+((u>>16)&1);return u>>16;}
int main(){
  float *x=aligned_alloc(64,sizeof(float)*CIN*RIN*ROW); uint32_t *px=aligned_alloc(64,4*CIN/2*RIN*ROW);
  float *wf=malloc(sizeof(float)*COUT/2*CIN*18); uint32_t *wb=malloc(4*COUT/2*CIN/2*18);
  float *y=aligned_alloc(64,4*COUT*RB*W), *y2=aligned_alloc(64,4*COUT*RB*W);
  srand(1);
  for(int i=0;i<CIN*RIN*ROW;i++){int col=i%ROW; x[i]=(col<8||col>=8+W)?0:(rand()/(float)RAND_MAX-0.5f);}
  // weights: logical w[o][c][b][cc]
  float *wl=malloc(sizeof(float)*COUT*CIN*9); for(int i=0;i<COUT*CIN*9;i++) wl[i]=rand()/(float)RAND_MAX-0.5f;
  for(int ob=0;ob<COUT/2;ob++)for(int c=0;c<CIN;c++)for(int cc=0;cc<3;cc++)for(int b=0;b<3;b++)for(int o=0;o<2;o++)
    wf[((ob*CIN+c)*3+cc)*6+b*2+o]=wl[((ob*2+o)*CIN+c)*9+b*3+cc];
  for(int ob=0;ob<COUT/2;ob++)for(int c=0;c<CIN/2;c++)for(int cc=0;cc<3;cc++)for(int b=0;b<3;b++)for(int o=0;o<2;o++){
    uint32_t lo=tobf(wl[((ob*2+o)*CIN+2*c)*9+b*3+cc]), hi=tobf(wl[((ob*2+o)*CIN+2*c+1)*9+b*3+cc]);
    wb[((ob*CIN/2+c)*3+cc)*6+b*2+o]=lo|(hi<<16);}
  double best1=1e9,best2=1e9,bestp=1e9; int reps=400;
  for(int t=0;t<5;t++){
    double t0=now();
    for(int k=0;k<reps;k++) for(int ob=0;ob<COUT/2;ob++) for(int xo=0;xo<W;xo+=32) f32_micro(x,wf+ob*CIN*18,y+ob*2*RB*W,xo);
    double t1=now();
    for(int k=0;k<reps;k++){ pack(x,px); for(int ob=0;ob<COUT/2;ob++) for(int xo=0;xo<W;xo+=32) bf_micro(px,wb+ob*CIN/2*18,y2+ob*2*RB*W,xo);}
    double t2=now();
    for(int k=0;k<reps;k++) pack(x,px);
    double t3=now();
    if(t1-t0<best1)best1=t1-t0; if(t2-t1<best2)best2=t2-t1; if(t3-t2<bestp)bestp=t3-t2;
  }
  double macs=(double)reps*COUT*CIN*9*RB*W;
  printf("f32  : %.1f GFLOP/s\nbf16 : %.1f GFLOP/s (incl. packing; packing alone %.1f%% of it)\nspeed-up %.2fx\n",
    2*macs/best1/1e9, 2*macs/best2/1e9, 100*bestp/best2, best1/best2);
  double e=0,n=0; for(int i=0;i<COUT*RB*W;i++){e+=(y[i]-y2[i])*(y[i]-y2[i]); n+=y[i]*y[i];}
  printf("rel L2 bf16 vs f32: %.2e\n", __builtin_sqrt(e/n));
}
