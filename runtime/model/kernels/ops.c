/* The elementwise and attention steps of a Llama layer in float32, for CPU decoding.
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

/* exp(x) for 8 floats (Cephes' range reduction and polynomial, as in avx_mathfun):
 * relative error ~2e-7, the same order as float32's rounding. */
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}

static inline float exp_scalar(float x) {
    float in[8] = {x}, out[8];
    _mm256_storeu_ps(out, exp256(_mm256_loadu_ps(in)));
    return out[0];
}

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

/* Single-query attention over paged blocks, one task per (job, query head).
 * q: job b's head h at q + b * q_stride + h * D (q_stride: a row of the fused qkv); job b's blocks are tables[starts[b] .. starts[b + 1]), its keys lens[b];
 * out [B][H][D]. Scores and softmax in float32. */
void fs_decode_attention(const float *q, int64_t q_stride, const float *kcache, const float *vcache,
                         const int64_t *tables, const int64_t *starts, const int64_t *lens,
                         float *out, int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t bs,
                         int64_t block_stride, float scale) {
    const int64_t group = H / KVH;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t task = 0; task < B * H; task++) {
        const int64_t b = task / H, h = task % H, kvh = h / group, len = lens[b];
        const float *qv = q + b * q_stride + h * D;
        const int64_t *table = tables + starts[b];
        float *scores = malloc(sizeof(float) * (size_t)(len + 8));
        float acc[64];
        float peak = -INFINITY;
        for (int64_t j = 0; j * bs < len; j++) {
            const float *kb = kcache + table[j] * block_stride + kvh * D * bs;
            const int64_t n = len - j * bs < bs ? len - j * bs : bs;
            for (int64_t t0 = 0; t0 < bs; t0 += 64) {
                const int64_t m = bs - t0 < 64 ? bs - t0 : 64;
                for (int64_t t = 0; t < m; t++) acc[t] = 0.0f;
                for (int64_t d = 0; d < D; d++) {
                    const float qd = qv[d];
                    const float *kr = kb + d * bs + t0;
                    for (int64_t t = 0; t < m; t++) acc[t] += qd * kr[t];
                }
                for (int64_t t = 0; t < m && t0 + t < n; t++) {
                    const float sc = acc[t] * scale;
                    scores[j * bs + t0 + t] = sc;
                    peak = sc > peak ? sc : peak;
                }
            }
        }
        int64_t t = 0;
        const __m256 vpeak = _mm256_set1_ps(peak);
        __m256 vsum = _mm256_setzero_ps();
        for (; t + 8 <= len; t += 8) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(scores + t), vpeak));
            _mm256_storeu_ps(scores + t, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        float lane[8], denom = 0.0f;
        _mm256_storeu_ps(lane, vsum);
        for (int i = 0; i < 8; i++) denom += lane[i];
        for (; t < len; t++) {
            scores[t] = exp_scalar(scores[t] - peak);
            denom += scores[t];
        }
        float *o = out + task * D;
        for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
        for (int64_t j = 0; j * bs < len; j++) {
            const float *vb = vcache + table[j] * block_stride + kvh * bs * D;
            const int64_t n = len - j * bs < bs ? len - j * bs : bs;
            for (int64_t i = 0; i < n; i++) {
                const float p = scores[j * bs + i];
                const float *vr = vb + i * D;
                for (int64_t d = 0; d < D; d++) o[d] += p * vr[d];
            }
        }
        const float inv = 1.0f / denom;
        for (int64_t d = 0; d < D; d++) o[d] *= inv;
        free(scores);
    }
}
