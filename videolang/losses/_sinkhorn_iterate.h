/* One instantiation of the fused kernel-route Sinkhorn solver, included by _sinkhorn_kernel.c once per
 * element type and vector width. The includer defines:
 *   SK_T       element type (float or double)
 *   SK_VBYTES  bytes per vector: problems are solved SK_VBYTES / sizeof(SK_T) at a time, one per lane
 *   SK_NAME    the function's name
 *   SK_TARGET  optional: instruction-set string for __attribute__((target)), e.g. "avx2,fma"
 *
 * Layout: a block of W problems is copied batch-innermost (entry (i, j) of problem w at kw[(i*m + j)*W + w]),
 * so every update is one vector operation over W problems; GCC/Clang vector extensions make that explicit,
 * the compiler picks the instructions for the target. Iterates are POT's: v = b / (K^T u), then
 * u = a / (K v), starting from u = 1. */

#define SK_CAT_(x, y) x##y
#define SK_CAT(x, y) SK_CAT_(x, y)
#define VEC SK_CAT(SK_NAME, _vec)
#ifdef SK_TARGET
#define SK_ATTR __attribute__((target(SK_TARGET)))
#else
#define SK_ATTR
#endif

typedef SK_T VEC __attribute__((vector_size(SK_VBYTES)));

/* Unaligned vector load and store; each compiles to one instruction. */
#define LD(p) ({ VEC x_; __builtin_memcpy(&x_, (p), sizeof x_); x_; })
#define ST(p, x) do { VEC y_ = (x); __builtin_memcpy((p), &y_, sizeof y_); } while (0)

/* Solve problems [0, batch) in place: k [batch, n, m] holds the kernels on entry, the plans on exit;
 * a [batch, n] and b [batch, m] are the marginals. With tol > 0 a block stops once the L1 error of every
 * real problem's column marginal is below tol, checked every check_every iterations.
 * Returns 0, or -1 when the workspace cannot be allocated. */
static SK_ATTR int SK_NAME(SK_T *k, const SK_T *a, const SK_T *b, int64_t batch, int64_t n, int64_t m,
                           int64_t n_iters, double tol, int64_t check_every) {
    enum { W = SK_VBYTES / sizeof(SK_T) };
    const int64_t nm = n * m;
    /* kw [n*m*W] | aw, u [n*W] | bw, v, ktu [m*W]; LD and ST need no alignment */
    SK_T *work = malloc(sizeof(SK_T) * (size_t)W * (size_t)(nm + 2 * n + 3 * m));
    if (work == NULL) return -1;
    SK_T *kw = work, *aw = kw + nm * W, *u = aw + n * W, *bw = u + n * W, *v = bw + m * W, *ktu = v + m * W;

    for (int64_t c0 = 0; c0 < batch; c0 += W) {
        const int64_t real = batch - c0 < W ? batch - c0 : W;
        /* Pack the block; unused lanes get K = 1 and uniform marginals, which stay finite. */
        for (int64_t w = 0; w < real; w++) {
            const SK_T *kp = k + (c0 + w) * nm, *ap = a + (c0 + w) * n, *bp = b + (c0 + w) * m;
            for (int64_t e = 0; e < nm; e++) kw[e * W + w] = kp[e];
            for (int64_t i = 0; i < n; i++) aw[i * W + w] = ap[i];
            for (int64_t j = 0; j < m; j++) bw[j * W + w] = bp[j];
        }
        for (int64_t w = real; w < W; w++) {
            for (int64_t e = 0; e < nm; e++) kw[e * W + w] = 1;
            for (int64_t i = 0; i < n; i++) aw[i * W + w] = (SK_T)1 / (SK_T)n;
            for (int64_t j = 0; j < m; j++) bw[j * W + w] = (SK_T)1 / (SK_T)m;
        }
        /* K^T u for the starting u = 1: column sums. */
        for (int64_t j = 0; j < m; j++) {
            VEC s = {0};
            for (int64_t i = 0; i < n; i++) s += LD(kw + (i * m + j) * W);
            ST(ktu + j * W, s);
        }
        for (int64_t it = 0; it < n_iters; it++) {
            if (tol > 0 && it > 0 && it % check_every == 0) {
                /* Column marginal of the current plan: v * K^T u. */
                double worst = 0;
                for (int64_t w = 0; w < real; w++) {
                    double err = 0;
                    for (int64_t j = 0; j < m; j++) {
                        double d = (double)(v[j * W + w] * ktu[j * W + w]) - (double)bw[j * W + w];
                        err += d < 0 ? -d : d;
                    }
                    if (err != err) { /* NaN: never converged, as in the torch loop */
                        worst = err;
                        break;
                    }
                    worst = err > worst ? err : worst;
                }
                if (worst < tol) break;
            }
            const int last = it == n_iters - 1; /* the last u needs no K^T u */
            for (int64_t j = 0; j < m; j++) ST(v + j * W, LD(bw + j * W) / LD(ktu + j * W));
            if (!last) memset(ktu, 0, sizeof(SK_T) * (size_t)(m * W));
            /* Rows in groups of four: K v for the group with four accumulators in registers, the group's
             * new u, then at once its share of K^T u while its rows are still in L1 cache, so each kernel
             * entry is read from L2 once per iteration. */
            int64_t i0 = 0;
            for (; i0 + 4 <= n; i0 += 4) {
                const SK_T *k0 = kw + i0 * m * W, *k1 = k0 + m * W, *k2 = k1 + m * W, *k3 = k2 + m * W;
                VEC s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
                for (int64_t j = 0; j < m; j++) {
                    const VEC vj = LD(v + j * W);
                    s0 += LD(k0 + j * W) * vj;
                    s1 += LD(k1 + j * W) * vj;
                    s2 += LD(k2 + j * W) * vj;
                    s3 += LD(k3 + j * W) * vj;
                }
                const VEC u0 = LD(aw + i0 * W) / s0, u1 = LD(aw + (i0 + 1) * W) / s1;
                const VEC u2 = LD(aw + (i0 + 2) * W) / s2, u3 = LD(aw + (i0 + 3) * W) / s3;
                ST(u + i0 * W, u0);
                ST(u + (i0 + 1) * W, u1);
                ST(u + (i0 + 2) * W, u2);
                ST(u + (i0 + 3) * W, u3);
                if (last) continue;
                for (int64_t j = 0; j < m; j++) {
                    const VEC t = (u0 * LD(k0 + j * W) + u1 * LD(k1 + j * W)) + (u2 * LD(k2 + j * W) + u3 * LD(k3 + j * W));
                    ST(ktu + j * W, LD(ktu + j * W) + t);
                }
            }
            for (; i0 < n; i0++) {
                const SK_T *k0 = kw + i0 * m * W;
                VEC s0 = {0};
                for (int64_t j = 0; j < m; j++) s0 += LD(k0 + j * W) * LD(v + j * W);
                const VEC u0 = LD(aw + i0 * W) / s0;
                ST(u + i0 * W, u0);
                if (last) continue;
                for (int64_t j = 0; j < m; j++) ST(ktu + j * W, LD(ktu + j * W) + u0 * LD(k0 + j * W));
            }
        }
        /* Plan = diag(u) K diag(v), unpacked to the real problems' slots. */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++) ST(kw + (i * m + j) * W, LD(kw + (i * m + j) * W) * (LD(u + i * W) * LD(v + j * W)));
        for (int64_t w = 0; w < real; w++) {
            SK_T *kp = k + (c0 + w) * nm;
            for (int64_t e = 0; e < nm; e++) kp[e] = kw[e * W + w];
        }
    }
    free(work);
    return 0;
}

#undef LD
#undef ST
#undef VEC
#undef SK_ATTR
#undef SK_CAT
#undef SK_CAT_
