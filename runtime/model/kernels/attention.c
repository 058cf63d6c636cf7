/* Single-query (decode) attention over paged KV blocks, float32, AVX2 + FMA, OpenMP.
 *
 * Layouts (see kv/pools.py): keys [block][KVH][D][bs] (transposed, so a block's scores are
 * contiguous vector loads), values [block][KVH][bs][D]. With grouped-query attention the
 * `group` query heads of one KV head read the same keys and values, so a task scores a tile
 * of them together: each key or value vector is loaded once per tile instead of once per
 * head. When there are too few (job, KV head) pairs to keep every thread busy (batch-1
 * decoding), each job's blocks are split between tasks and the partial softmaxes merged.
 * Mirrors decode_attention.py (scores, max-subtracted softmax and the weighted sum of values
 * in float32); differs from it only in summation order.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#define SCORE_HEADS 4 /* query heads a score tile holds: 8 accumulators of 16 keys */
#define VALUE_HEADS 3 /* query heads a value tile holds: 12 accumulators of 32 dims */

#include "simd_exp.h"

/* Ask for the next block's keys or values (bytes from p) while this one is computed: each
 * block sits in its own place of the pool, where the hardware prefetcher cannot follow. */
static inline void prefetch_block(const float *p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch((const char *)p + off, _MM_HINT_T0);
}

/* scores[h][t] = scale * q[h] . k[t] for the NH heads of a tile and one block's n keys. */
static inline __attribute__((always_inline)) void score_block(
    const int NH, const float *q, int64_t D, const float *kb, int64_t bs, int64_t n,
    float scale, float *scores, int64_t row) {
    int64_t t0 = 0;
    for (; t0 + 16 <= n; t0 += 16) {
        __m256 acc[SCORE_HEADS][2];
        for (int h = 0; h < NH; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
        for (int64_t d = 0; d < D; d++) {
            const __m256 k0 = _mm256_loadu_ps(kb + d * bs + t0);
            const __m256 k1 = _mm256_loadu_ps(kb + d * bs + t0 + 8);
            for (int h = 0; h < NH; h++) {
                const __m256 qd = _mm256_broadcast_ss(q + h * D + d);
                acc[h][0] = _mm256_fmadd_ps(qd, k0, acc[h][0]);
                acc[h][1] = _mm256_fmadd_ps(qd, k1, acc[h][1]);
            }
        }
        const __m256 vs = _mm256_set1_ps(scale);
        for (int h = 0; h < NH; h++) {
            _mm256_storeu_ps(scores + h * row + t0, _mm256_mul_ps(acc[h][0], vs));
            _mm256_storeu_ps(scores + h * row + t0 + 8, _mm256_mul_ps(acc[h][1], vs));
        }
    }
    for (; t0 + 8 <= n; t0 += 8) {
        __m256 acc[SCORE_HEADS];
        for (int h = 0; h < NH; h++) acc[h] = _mm256_setzero_ps();
        for (int64_t d = 0; d < D; d++) {
            const __m256 k0 = _mm256_loadu_ps(kb + d * bs + t0);
            for (int h = 0; h < NH; h++)
                acc[h] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + h * D + d), k0, acc[h]);
        }
        for (int h = 0; h < NH; h++)
            _mm256_storeu_ps(scores + h * row + t0, _mm256_mul_ps(acc[h], _mm256_set1_ps(scale)));
    }
    for (; t0 < n; t0++) {
        for (int h = 0; h < NH; h++) {
            float s = 0.0f;
            for (int64_t d = 0; d < D; d++) s += q[h * D + d] * kb[d * bs + t0];
            scores[h * row + t0] = s * scale;
        }
    }
}

/* p[t] = exp(s[t] - max s) over len scores, in place; returns the sum of p, the max in *peak_out. */
static float softmax_numerators(float *s, int64_t len, float *peak_out) {
    float peak = -INFINITY;
    for (int64_t t = 0; t < len; t++) peak = s[t] > peak ? s[t] : peak;
    *peak_out = peak;
    const __m256 vpeak = _mm256_set1_ps(peak);
    __m256 vsum = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= len; t += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + t), vpeak));
        _mm256_storeu_ps(s + t, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float lane[8], sum = 0.0f;
    _mm256_storeu_ps(lane, vsum);
    for (int i = 0; i < 8; i++) sum += lane[i];
    for (; t < len; t++) {
        s[t] = exp_scalar(s[t] - peak);
        sum += s[t];
    }
    return sum;
}

/* out[h][d0 .. d0 + 8 W) = sum_t p[h][t] v[t][d0 ..] for NH heads, W vectors of 8 dims. */
static inline __attribute__((always_inline)) void value_chunk(
    const int NH, const int W, const float *p, int64_t row, const float *vcache,
    const int64_t *table, int64_t len, int64_t bs, int64_t head_off, int64_t block_stride,
    int64_t D, int64_t d0, float *o, const float *inv) {
    __m256 acc[VALUE_HEADS][4];
    for (int h = 0; h < NH; h++)
        for (int w = 0; w < W; w++) acc[h][w] = _mm256_setzero_ps();
    for (int64_t j = 0; j * bs < len; j++) {
        const float *vb = vcache + table[j] * block_stride + head_off + d0;
        const int64_t n = len - j * bs < bs ? len - j * bs : bs;
        if ((j + 1) * bs < len)
            prefetch_block(vcache + table[j + 1] * block_stride + head_off, bs * D * 4);
        for (int64_t i = 0; i < n; i++) {
            __m256 v[4];
            for (int w = 0; w < W; w++) v[w] = _mm256_loadu_ps(vb + i * D + 8 * w);
            for (int h = 0; h < NH; h++) {
                const __m256 ph = _mm256_broadcast_ss(p + h * row + j * bs + i);
                for (int w = 0; w < W; w++) acc[h][w] = _mm256_fmadd_ps(ph, v[w], acc[h][w]);
            }
        }
    }
    for (int h = 0; h < NH; h++)
        for (int w = 0; w < W; w++)
            _mm256_storeu_ps(o + h * D + d0 + 8 * w,
                             _mm256_mul_ps(acc[h][w], _mm256_set1_ps(inv[h])));
}

static void values_tile(const int NH, const float *p, int64_t row, const float *vcache,
                        const int64_t *table, int64_t len, int64_t bs, int64_t head_off,
                        int64_t block_stride, int64_t D, float *o, const float *inv) {
    int64_t d0 = 0;
#define CHUNK(nh, w) value_chunk(nh, w, p, row, vcache, table, len, bs, head_off, block_stride, D, d0, o, inv)
    for (; d0 + 32 <= D; d0 += 32) {
        if (NH == 1) CHUNK(1, 4); else if (NH == 2) CHUNK(2, 4); else CHUNK(3, 4);
    }
    for (; d0 + 8 <= D; d0 += 8) {
        if (NH == 1) CHUNK(1, 1); else if (NH == 2) CHUNK(2, 1); else CHUNK(3, 1);
    }
#undef CHUNK
}

/* One tile: NH query heads (q, o: NH rows of D) of one job over len keys of its KV head,
 * in the blocks from table on. With `partial` (NH pairs: peak, sum) the output is left
 * unnormalized (sum_t exp(s_t - peak) v_t) for a later merge; else it is the attention. */
static void attend_tile(int NH, const float *q, const float *kcache, const float *vcache,
                        const int64_t *table, int64_t len, int64_t KVH_off_k,
                        int64_t KVH_off_v, int64_t D, int64_t bs, int64_t block_stride,
                        float scale, float *scores, int64_t row, float *o, float *partial) {
    for (int64_t j = 0; j * bs < len; j++) {
        const float *kb = kcache + table[j] * block_stride + KVH_off_k;
        const int64_t n = len - j * bs < bs ? len - j * bs : bs;
        float *s = scores + j * bs;
        if ((j + 1) * bs < len)
            prefetch_block(kcache + table[j + 1] * block_stride + KVH_off_k, bs * D * 4);
        switch (NH) {
        case 1: score_block(1, q, D, kb, bs, n, scale, s, row); break;
        case 2: score_block(2, q, D, kb, bs, n, scale, s, row); break;
        case 3: score_block(3, q, D, kb, bs, n, scale, s, row); break;
        default: score_block(4, q, D, kb, bs, n, scale, s, row); break;
        }
    }
    float inv[SCORE_HEADS];
    for (int h = 0; h < NH; h++) {
        float peak;
        const float sum = softmax_numerators(scores + h * row, len, &peak);
        inv[h] = partial ? 1.0f : 1.0f / sum;
        if (partial) {
            partial[2 * h] = peak;
            partial[2 * h + 1] = sum;
        }
    }
    for (int h0 = 0; h0 < NH; h0 += VALUE_HEADS) {
        const int nh = NH - h0 < VALUE_HEADS ? NH - h0 : VALUE_HEADS;
        values_tile(nh, scores + h0 * row, row, vcache, table, len, bs, KVH_off_v,
                    block_stride, D, o + h0 * D, inv + h0);
    }
    if (D % 8) { /* dims past the last whole vector (no Llama model has them) */
        for (int h = 0; h < NH; h++) {
            for (int64_t d = D - D % 8; d < D; d++) {
                float acc = 0.0f;
                for (int64_t t = 0; t < len; t++) {
                    const float *vb = vcache + table[t / bs] * block_stride + KVH_off_v;
                    acc += scores[h * row + t] * vb[(t % bs) * D + d];
                }
                o[h * D + d] = acc * inv[h];
            }
        }
    }
}

/* The attention of one (job, head) from its splits' partials (peak, sum, unnormalized
 * output each): the log-sum-exp merge. */
static void merge_splits(const float *parts, const float *acc, int64_t splits, int64_t D,
                         float *o) {
    float peak = -INFINITY;
    for (int64_t s = 0; s < splits; s++) /* an empty split (sum 0) has no peak */
        if (parts[2 * s + 1] != 0.0f && parts[2 * s] > peak) peak = parts[2 * s];
    float sum = 0.0f;
    for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
    for (int64_t s = 0; s < splits; s++) {
        if (parts[2 * s + 1] == 0.0f) continue; /* an empty split */
        const float w = expf(parts[2 * s] - peak);
        sum += w * parts[2 * s + 1];
        for (int64_t d = 0; d < D; d++) o[d] += w * acc[s * D + d];
    }
    const float inv = 1.0f / sum;
    for (int64_t d = 0; d < D; d++) o[d] *= inv;
}

/* q: job b's head h at q + b * q_stride + h * D (q_stride: a row of the fused qkv); job b's
 * blocks are tables[starts[b] .. starts[b + 1]), its keys lens[b]; out [B][H][D].
 * Tasks are (job, KV head, head tile, key split): with fewer (job, KV head) pairs than two
 * per thread (batch-1 decoding), each job's blocks are split so every thread has work, and
 * the splits are merged after; otherwise a task covers all of a job's keys. */
void fs_decode_attention(const float *q, int64_t q_stride, const float *kcache, const float *vcache,
                         const int64_t *tables, const int64_t *starts, const int64_t *lens,
                         float *out, int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t bs,
                         int64_t block_stride, float scale) {
    const int64_t group = H / KVH;
    int64_t max_len = 1;
    for (int64_t b = 0; b < B; b++) max_len = lens[b] > max_len ? lens[b] : max_len;
    const int64_t tile = group < SCORE_HEADS ? group : SCORE_HEADS;
    const int64_t tiles_per_kv = (group + tile - 1) / tile;
    const int64_t max_blocks = (max_len + bs - 1) / bs;
    const int64_t want = 2 * omp_get_max_threads();
    int64_t splits = B * KVH < want ? (want + B * KVH - 1) / (B * KVH) : 1;
    splits = splits < max_blocks ? splits : max_blocks;
    const int64_t per_split = (max_blocks + splits - 1) / splits; /* blocks a split covers */
    const int64_t row = per_split * bs + 16; /* a head's score row, padded */
    /* Per (job, head, split): peak and sum, and the unnormalized output. */
    float *parts = splits > 1 ? malloc(sizeof(float) * (size_t)(B * H * splits * 2)) : NULL;
    float *accs = splits > 1 ? malloc(sizeof(float) * (size_t)(B * H * splits * D)) : NULL;
    const int64_t tasks = B * KVH * tiles_per_kv * splits;
#pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * (size_t)(row * tile));
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t split = task % splits;
            const int64_t rest = task / splits;
            const int64_t b = rest / (KVH * tiles_per_kv);
            const int64_t kvh = rest / tiles_per_kv % KVH;
            const int64_t h0 = kvh * group + rest % tiles_per_kv * tile;
            const int NH = (int)(kvh * group + group - h0 < tile ? kvh * group + group - h0 : tile);
            const int64_t key0 = split * per_split * bs;
            const int64_t key1 = key0 + per_split * bs < lens[b] ? key0 + per_split * bs : lens[b];
            const float *qh = q + b * q_stride + h0 * D;
            const int64_t *table = tables + starts[b] + split * per_split;
            if (splits == 1) {
                attend_tile(NH, qh, kcache, vcache, table, key1, kvh * D * bs, kvh * bs * D, D,
                            bs, block_stride, scale, scores, row, out + (b * H + h0) * D, NULL);
                continue;
            }
            float part[2 * SCORE_HEADS];
            if (key1 <= key0) { /* this job has no blocks in the split */
                for (int h = 0; h < NH; h++) {
                    float *pp = parts + ((b * H + h0 + h) * splits + split) * 2;
                    pp[0] = -INFINITY;
                    pp[1] = 0.0f;
                }
                continue;
            }
            /* The tile's NH output rows, staged (D <= 512, cpu_kernels.py checks) and then
             * stored per split. */
            float staged[SCORE_HEADS * 512];
            attend_tile(NH, qh, kcache, vcache, table, key1 - key0, kvh * D * bs, kvh * bs * D,
                        D, bs, block_stride, scale, scores, row, staged, part);
            for (int h = 0; h < NH; h++) {
                float *pp = parts + ((b * H + h0 + h) * splits + split) * 2;
                pp[0] = part[2 * h];
                pp[1] = part[2 * h + 1];
                float *dst = accs + ((b * H + h0 + h) * splits + split) * D;
                for (int64_t d = 0; d < D; d++) dst[d] = staged[h * D + d];
            }
        }
        free(scores);
    }
    if (splits > 1) {
        for (int64_t bh = 0; bh < B * H; bh++)
            merge_splits(parts + bh * splits * 2, accs + bh * splits * D, splits, D, out + bh * D);
        free(parts);
        free(accs);
    }
}
