/* y = x @ W^T (+ bias) with W kept in GGUF's block-quantized formats (AVX2 + FMA, OpenMP).
 *
 * Decoding reads the weights once per step, so its speed is the weights' size over memory
 * bandwidth: Q4_1 is 0.75 bytes a weight here against 4 for float32. Each weight is rebuilt
 * exactly as the dequantized float32 checkpoint holds it (d * q + m with d * q exact in
 * float32, so one fused multiply-add rounds once, as numpy's (d * q) + m does), and products
 * accumulate in float32: results differ from a dense float32 matmul only in summation order.
 *
 * Layouts (one row of W = K weights, in blocks of 32 along K):
 *   Q4_1: qs[N][K/2] bytes, block b's byte j holds weight 32b+j (low nibble) and 32b+j+16
 *         (high nibble), as GGUF stores them; d[N][K/32], m[N][K/32] float32.
 *   Q8_0: qs[N][K] int8; d[N][K/32] float32; weight = d * q.
 * x is [M][K] and y is [M][N], both row-major float32. Rows of W are split over the OpenMP
 * threads (the process's one OpenMP runtime, torch's, so thread counts agree with torch).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define ROW_TILE 8

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline void q4_1_decode(const uint8_t *q, float d, float m, __m256 w[4]) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)q);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(raw, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    w[0] = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), vm);
    w[1] = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), vm);
    w[2] = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), vm);
    w[3] = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), vm);
}

static inline void q8_0_decode(const int8_t *q, float d, __m256 w[4]) {
    const __m256 vd = _mm256_set1_ps(d);
    for (int i = 0; i < 4; i++) {
        const __m128i raw = _mm_loadl_epi64((const __m128i *)(q + 8 * i));
        w[i] = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw)));
    }
}

/* One weight row against R (1..4) input rows; `decode` fills w[4] for block b. */
#define ROW_KERNEL(NAME, DECODE)                                                            \
    static void NAME(const void *qrow, const float *drow, const float *mrow, const float *x, \
                     int64_t K, int64_t R, float *out) {                                     \
        const int64_t nb = K / 32;                                                           \
        __m256 w[4];                                                                         \
        if (R == 1) {                                                                        \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                      \
            for (int64_t b = 0; b < nb; b++) {                                               \
                DECODE;                                                                      \
                const float *xb = x + 32 * b;                                                \
                a0 = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xb), a0);                         \
                a1 = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xb + 8), a1);                     \
                a2 = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xb + 16), a2);                    \
                a3 = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xb + 24), a3);                    \
            }                                                                                \
            out[0] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));      \
            return;                                                                          \
        }                                                                                    \
        __m256 acc[4][2];                                                                    \
        for (int64_t r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();         \
        for (int64_t b = 0; b < nb; b++) {                                                   \
            DECODE;                                                                          \
            for (int64_t r = 0; r < R; r++) {                                                \
                const float *xb = x + r * K + 32 * b;                                        \
                acc[r][0] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xb), acc[r][0]);           \
                acc[r][1] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xb + 8), acc[r][1]);       \
                acc[r][0] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xb + 16), acc[r][0]);      \
                acc[r][1] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xb + 24), acc[r][1]);      \
            }                                                                                \
        }                                                                                    \
        for (int64_t r = 0; r < R; r++) out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));  \
    }

ROW_KERNEL(q4_1_row, q4_1_decode((const uint8_t *)qrow + 16 * b, drow[b], mrow[b], w))
ROW_KERNEL(q8_0_row, q8_0_decode((const int8_t *)qrow + 32 * b, drow[b], w))


/* One input row against four weight rows: the x loads are shared and eight independent
 * accumulator chains keep both FMA ports busy (single-stream decode's shape). */
#define QUAD_KERNEL(NAME, DECODE)                                                           \
    static inline void NAME(const uint8_t *q0, int64_t row_bytes, const float *d0,         \
                            const float *m0, const float *x, int64_t K, float *out) {      \
        const int64_t nb = K / 32;                                                         \
        __m256 acc[4][2];                                                                  \
        for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();           \
        for (int64_t b = 0; b < nb; b++) {                                                 \
            const float *xb = x + 32 * b;                                                  \
            const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);           \
            const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);     \
            for (int r = 0; r < 4; r++) {                                                  \
                __m256 w[4];                                                               \
                const void *qrow = q0 + r * row_bytes;                                     \
                const float *drow = d0 + r * nb;                                           \
                const float *mrow = m0 ? m0 + r * nb : 0;                                  \
                (void)mrow;                                                                \
                DECODE;                                                                    \
                acc[r][0] = _mm256_fmadd_ps(w[0], x0, acc[r][0]);                          \
                acc[r][1] = _mm256_fmadd_ps(w[1], x1, acc[r][1]);                          \
                acc[r][0] = _mm256_fmadd_ps(w[2], x2, acc[r][0]);                          \
                acc[r][1] = _mm256_fmadd_ps(w[3], x3, acc[r][1]);                          \
            }                                                                              \
        }                                                                                  \
        for (int r = 0; r < 4; r++) out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));    \
    }

QUAD_KERNEL(q4_1_quad, q4_1_decode((const uint8_t *)qrow + 16 * b, drow[b], mrow[b], w))
QUAD_KERNEL(q8_0_quad, q8_0_decode((const int8_t *)qrow + 32 * b, drow[b], w))


/* Four weight rows rebuilt into float32 (L1-resident) and dotted with many input rows:
 * with more than 4 input rows, rebuilding each block once and reusing it beats
 * rebuilding it per group of 4 rows. */
#define DECODE_ROWS(NAME, DECODE)                                                          \
    static void NAME(const uint8_t *q0, int64_t row_bytes, const float *d0, const float *m0,\
                     int64_t K, float *buf) {                                              \
        const int64_t nb = K / 32;                                                         \
        for (int r = 0; r < 4; r++) {                                                      \
            const void *qrow = q0 + r * row_bytes;                                         \
            const float *drow = d0 + r * nb;                                               \
            const float *mrow = m0 ? m0 + r * nb : 0;                                      \
            (void)mrow;                                                                    \
            for (int64_t b = 0; b < nb; b++) {                                             \
                __m256 w[4];                                                               \
                DECODE;                                                                    \
                float *dst = buf + r * K + 32 * b;                                         \
                for (int i = 0; i < 4; i++) _mm256_storeu_ps(dst + 8 * i, w[i]);           \
            }                                                                              \
        }                                                                                  \
    }

DECODE_ROWS(q4_1_rows, q4_1_decode((const uint8_t *)qrow + 16 * b, drow[b], mrow[b], w))
DECODE_ROWS(q8_0_rows, q8_0_decode((const int8_t *)qrow + 32 * b, drow[b], w))

/* Four rebuilt weight rows against three input rows: twelve accumulators, seven loads
 * per twelve FMAs, so the loop is bound by the FMA ports rather than by loads. */
static inline void dense_4x3(const float *buf, const float *x, int64_t K, int64_t R,
                             float out[3][4]) {
    __m256 acc[3][4];
    for (int j = 0; j < 3; j++)
        for (int r = 0; r < 4; r++) acc[j][r] = _mm256_setzero_ps();
    const float *x1 = x + (R > 1 ? K : 0), *x2 = x + (R > 2 ? 2 * K : 0);
    for (int64_t k = 0; k < K; k += 8) {
        const __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x1 + k);
        const __m256 c = _mm256_loadu_ps(x2 + k);
        for (int r = 0; r < 4; r++) {
            const __m256 w = _mm256_loadu_ps(buf + r * K + k);
            acc[0][r] = _mm256_fmadd_ps(w, a, acc[0][r]);
            acc[1][r] = _mm256_fmadd_ps(w, b, acc[1][r]);
            acc[2][r] = _mm256_fmadd_ps(w, c, acc[2][r]);
        }
    }
    for (int j = 0; j < 3; j++)
        for (int r = 0; r < 4; r++) out[j][r] = hsum(acc[j][r]);
}

typedef void (*row_fn)(const void *, const float *, const float *, const float *, int64_t,
                       int64_t, float *);

typedef void (*quad_fn)(const uint8_t *, int64_t, const float *, const float *, const float *,
                        int64_t, float *);

typedef void (*rows_fn)(const uint8_t *, int64_t, const float *, const float *, int64_t, float *);

static void matmul(row_fn row, quad_fn quad, rows_fn rows, const uint8_t *qs, int64_t row_bytes, const float *d,
                   const float *m, const float *bias, const float *x, float *y, int64_t M,
                   int64_t N, int64_t K) {
    const int64_t nb = K / 32;
    const int64_t tiles = (N + ROW_TILE - 1) / ROW_TILE;
    if (M > 4 && N % 4 == 0) {
#pragma omp parallel
        {
            float *buf = aligned_alloc(32, (size_t)(4 * K) * sizeof(float));
#pragma omp for schedule(static)
            for (int64_t q = 0; q < N / 4; q++) {
                const int64_t n = 4 * q;
                float out[3][4];
                rows(qs + n * row_bytes, row_bytes, d + n * nb, m ? m + n * nb : 0, K, buf);
                for (int64_t r0 = 0; r0 < M; r0 += 3) {
                    const int64_t R = M - r0 < 3 ? M - r0 : 3;
                    dense_4x3(buf, x + r0 * K, K, R, out);
                    for (int64_t j = 0; j < R; j++)
                        for (int i = 0; i < 4; i++)
                            y[(r0 + j) * N + n + i] = out[j][i] + (bias ? bias[n + i] : 0.0f);
                }
            }
            free(buf);
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t n1 = (t + 1) * ROW_TILE < N ? (t + 1) * ROW_TILE : N;
        float out[4];
        int64_t n = t * ROW_TILE;
        if (M == 1) {
            for (; n + 4 <= n1; n += 4) {
                quad(qs + n * row_bytes, row_bytes, d + n * nb, m ? m + n * nb : 0, x, K, out);
                for (int r = 0; r < 4; r++) y[n + r] = out[r] + (bias ? bias[n + r] : 0.0f);
            }
        }
        for (int64_t r0 = 0; r0 < M; r0 += 4) {
            const int64_t R = M - r0 < 4 ? M - r0 : 4;
            for (int64_t i = n; i < n1; i++) {
                row(qs + i * row_bytes, d + i * nb, m ? m + i * nb : 0, x + r0 * K, K, R, out);
                const float b = bias ? bias[i] : 0.0f;
                for (int64_t r = 0; r < R; r++) y[(r0 + r) * N + i] = out[r] + b;
            }
        }
    }
}

void fs_q4_1_matmul(const uint8_t *qs, const float *d, const float *m, const float *bias,
                    const float *x, float *y, int64_t M, int64_t N, int64_t K) {
    matmul(q4_1_row, q4_1_quad, q4_1_rows, qs, K / 2, d, m, bias, x, y, M, N, K);
}

void fs_q8_0_matmul(const int8_t *qs, const float *d, const float *bias, const float *x,
                    float *y, int64_t M, int64_t N, int64_t K) {
    matmul(q8_0_row, q8_0_quad, q8_0_rows, (const uint8_t *)qs, K, d, 0, bias, x, y, M, N, K);
}
