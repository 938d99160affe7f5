/* MER's replay draw (`getBatch` of mattriemer/MER model/eralg4.py ... meralg7.py) on CPython's own random state.
 *
 * getBatch keeps one list `order = range(size)` per batch and, for each of the n items, shuffles the whole
 * list with random.shuffle and takes order[j]: n * (size - 1) draws, O(memory) Python work per replayed item.
 * This does the same calls on a copy of the Python Random's state (random.getstate()), so the caller can put
 * the advanced state back with setstate() and the run consumes the stream exactly as the reference does.
 *
 * genrand is CPython's Modules/_randommodule.c genrand_uint32 (MT19937); randbelow is Lib/random.py
 * _randbelow_with_getrandbits (k = n.bit_length(), getrandbits(k) = genrand >> (32 - k) for k <= 32,
 * rejected while >= n); the shuffle is Random.shuffle's loop. Python >= 3.10 (tests/test_reservoir.py checks
 * the kernel against random.shuffle, and methods/mer_draw.py against it once per process).
 */
#include <stdint.h>

#define MT_N 624
#define MT_M 397

static uint32_t genrand(uint32_t *mt, int32_t *index)
{
    uint32_t y;
    static const uint32_t mag01[2] = {0x0U, 0x9908b0dfU};
    if (*index >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
            mt[kk] = mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        for (; kk < MT_N - 1; kk++) {
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
            mt[kk] = mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        y = (mt[MT_N - 1] & 0x80000000U) | (mt[0] & 0x7fffffffU);
        mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
        *index = 0;
    }
    y = mt[(*index)++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
}

/* n in [2, 2^32): a uniform integer in [0, n). */
static uint32_t randbelow(uint32_t *mt, int32_t *index, uint32_t n)
{
    int shift = __builtin_clz(n);          /* 32 - n.bit_length() */
    uint32_t r = genrand(mt, index) >> shift;
    while (r >= n)
        r = genrand(mt, index) >> shift;
    return r;
}

/* out[j] for j < n: the reference's n draws from `size` slots; order needs `size` entries. */
void mer_getbatch(uint32_t *mt, int32_t *index, int64_t size, int64_t n, int64_t *order, int64_t *out)
{
    for (int64_t i = 0; i < size; i++)
        order[i] = i;
    for (int64_t j = 0; j < n; j++) {
        for (int64_t i = size - 1; i > 0; i--) {
            int64_t r = randbelow(mt, index, (uint32_t)(i + 1));
            int64_t tmp = order[i];
            order[i] = order[r];
            order[r] = tmp;
        }
        out[j] = order[j];
    }
}
