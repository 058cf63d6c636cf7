/* The elementwise, rotary and cache-write steps of a Llama layer in float32, for CPU decoding.
 *
 * At batch 1 a torch op costs more in dispatch (5-10 us) than in arithmetic on 576
 * values, and a layer runs ~40 of them; these kernels do each step in one call. Each one
 * mirrors a torch function in runtime/model (layers.py, attention.py), in float32, and is
 * tested against it (tests/unit/test_c_kernels.py).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "simd_exp.h"

/* out = x * rsqrt(mean(x^2) + eps) * w, per row of x [T][H]. */
void fs_rms_norm(const float *x, const float *w, float *out, int64_t T, int64_t H, float eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * H;
        float *o = out + t * H;
        float ss = 0.0f;
        for (int64_t i = 0; i < H; i++) ss += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(ss / (float)H + eps);
        for (int64_t i = 0; i < H; i++) o[i] = xr[i] * inv * w[i];
    }
}

/* x += h (the residual stream, in place), then out = rms_norm(x). */
void fs_add_rms_norm(float *x, const float *h, const float *w, float *out, int64_t T, int64_t H,
                     float eps) {
    for (int64_t i = 0; i < T * H; i++) x[i] += h[i];
    fs_rms_norm(x, w, out, T, H, eps);
}

/* out [T][F] = silu(gate) * up, from the fused projection gu [T][2F] = [gate | up]. */
void fs_silu_mul(const float *gu, float *out, int64_t T, int64_t F) {
    for (int64_t t = 0; t < T; t++) {
        const float *g = gu + t * 2 * F, *u = g + F;
        float *o = out + t * F;
        int64_t i = 0;
        for (; i + 8 <= F; i += 8) {
            const __m256 gv = _mm256_loadu_ps(g + i);
            const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            const __m256 s = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
            _mm256_storeu_ps(o + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
        }
        for (; i < F; i++) o[i] = g[i] / (1.0f + exp_scalar(-g[i])) * u[i];
    }
}

/* Rotary embedding on q and k (in place in qkv [T][(H + 2 KVH) D]) with HF's rotate_half
 * convention (ssin holds sin with its first half negated), then this step's k and v
 * stored in their cache slots: keys [block][KVH][D][bs], values [block][KVH][bs][D]. */
void fs_rope_write_kv(float *qkv, const int64_t *pos, const float *cos_t, const float *ssin_t,
                      float *kcache, float *vcache, const int64_t *slots, int64_t T, int64_t H,
                      int64_t KVH, int64_t D, int64_t bs, int64_t block_stride) {
    const int64_t width = (H + 2 * KVH) * D, half = D / 2;
    for (int64_t t = 0; t < T; t++) {
        float *row = qkv + t * width;
        const float *c = cos_t + pos[t] * D, *s = ssin_t + pos[t] * D;
        for (int64_t h = 0; h < H + KVH; h++) {
            float *x = row + h * D;
            float rot[512];
            for (int64_t i = 0; i < D; i++) {
                const float other = i < half ? x[i + half] : x[i - half];
                rot[i] = x[i] * c[i] + other * s[i];
            }
            for (int64_t i = 0; i < D; i++) x[i] = rot[i];
        }
        const int64_t block = slots[t] / bs, off = slots[t] % bs;
        for (int64_t h = 0; h < KVH; h++) {
            const float *k = row + (H + h) * D, *v = row + (H + KVH + h) * D;
            float *kb = kcache + block * block_stride + h * D * bs + off;
            float *vb = vcache + block * block_stride + (h * bs + off) * D;
            for (int64_t i = 0; i < D; i++) kb[i * bs] = k[i];
            for (int64_t i = 0; i < D; i++) vb[i] = v[i];
        }
    }
}
