/* Sequential single-example SGD steps on an MLP (Linear, ReLU, ..., Linear) with cross-entropy loss.
 *
 * The inner loop of MER: k examples, one plain SGD step each, in order. Same math as PyTorch autograd
 * plus optim.SGD on a batch of one (gradients of all layers from the weights before the step), with the
 * loss of example e multiplied by scale[e] (NULL = 1).
 *
 * Parameters are one flat float32 vector, per layer l: W_l stored INPUT-major, [n_l x n_{l+1}] (the
 * transpose of nn.Linear's weight; the module's weight is a transposed view of it), then b_l [n_{l+1}].
 * Input-major rows make every loop below a contiguous axpy or dot over the layer's outputs, and let
 * the loops skip zero inputs: MNIST pixels are ~80% zero and ReLU zeroes about half of the hidden
 * units; a zero input contributes exactly nothing to the forward pass and gets an exactly zero weight
 * gradient, so skipping it changes no result.
 * work needs 2 * (n_1 + ... + n_L) floats.
 */
#include <math.h>
#include <stdint.h>

#define LANES 8

/* Dot product with LANES independent partial sums (no reassociation without -ffast-math otherwise). */
static float dot(const float *a, const float *b, int64_t n)
{
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[i + l] * b[i + l];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

/* Reptile step theta <- w + (theta - w) * c, in the reference's order of operations. */
void reptile(float *theta, const float *w, int64_t n, float c)
{
    for (int64_t i = 0; i < n; i++) theta[i] = w[i] + (theta[i] - w[i]) * c;
}

void mlp_sgd_sequence(float *theta, int32_t L, const int64_t *sizes, const float *X, const int64_t *Y,
                      const float *scale, int64_t k, float lr, float *work)
{
    int64_t woff[64], boff[64], hoff[65];
    int64_t off = 0, hsum = 0;
    for (int l = 0; l < L; l++) {
        woff[l] = off; off += sizes[l] * sizes[l + 1];
        boff[l] = off; off += sizes[l + 1];
        hoff[l + 1] = hsum; hsum += sizes[l + 1];
    }
    float *act = work, *dlt = work + hsum;   /* activations / deltas of layer l (1..L) at hoff[l] */

    for (int64_t e = 0; e < k; e++) {
        const float *x = X + e * sizes[0];

        /* forward: h = b + sum_i in[i] * W[i, :] over nonzero inputs */
        for (int l = 0; l < L; l++) {
            const int64_t ni = sizes[l], no = sizes[l + 1];
            const float *W = theta + woff[l], *b = theta + boff[l];
            const float *in = l == 0 ? x : act + hoff[l];
            float *h = act + hoff[l + 1];
            for (int64_t o = 0; o < no; o++) h[o] = 0.0f;
            for (int64_t i = 0; i < ni; i++) {
                const float v = in[i];
                if (v == 0.0f) continue;
                const float *w = W + i * no;
                for (int64_t o = 0; o < no; o++) h[o] += v * w[o];
            }
            for (int64_t o = 0; o < no; o++) h[o] += b[o];
            if (l < L - 1)
                for (int64_t o = 0; o < no; o++) if (!(h[o] > 0.0f)) h[o] = 0.0f;
        }

        /* dLoss/dlogits = scale * (softmax - onehot) */
        {
            const int64_t no = sizes[L];
            const float *z = act + hoff[L];
            float *g = dlt + hoff[L];
            float m = z[0];
            for (int64_t o = 1; o < no; o++) if (z[o] > m) m = z[o];
            float sum = 0.0f;
            for (int64_t o = 0; o < no; o++) { g[o] = expf(z[o] - m); sum += g[o]; }
            for (int64_t o = 0; o < no; o++) g[o] = g[o] / sum;
            g[Y[e]] -= 1.0f;
            if (scale && scale[e] != 1.0f)
                for (int64_t o = 0; o < no; o++) g[o] *= scale[e];
        }

        /* backward through the hidden layers, with the weights before the step */
        for (int l = L - 1; l >= 1; l--) {
            const int64_t ni = sizes[l], no = sizes[l + 1];
            const float *W = theta + woff[l], *d = dlt + hoff[l + 1], *h = act + hoff[l];
            float *dp = dlt + hoff[l];
            for (int64_t i = 0; i < ni; i++) dp[i] = h[i] > 0.0f ? dot(W + i * no, d, no) : 0.0f;
        }

        /* SGD step p <- p - lr * grad; rows of zero inputs have zero gradient */
        for (int l = 0; l < L; l++) {
            const int64_t ni = sizes[l], no = sizes[l + 1];
            float *W = theta + woff[l], *b = theta + boff[l];
            const float *in = l == 0 ? x : act + hoff[l];
            const float *d = dlt + hoff[l + 1];
            for (int64_t i = 0; i < ni; i++) {
                const float v = in[i];
                if (v == 0.0f) continue;
                float *w = W + i * no;
                for (int64_t o = 0; o < no; o++) { const float gr = d[o] * v; w[o] -= lr * gr; }
            }
            for (int64_t o = 0; o < no; o++) b[o] -= lr * d[o];
        }
    }
}
