/* e2enc C API demo: load a compiled bundle, print its input and output shapes, run it on a
 * deterministic input and print checksums of the first output (the logits).
 *
 *   usage: demo BUNDLE_DIR [THREADS]        (THREADS: 0 or absent = all cores)
 *
 * The input is x[i] = ((i * 37) % 101) / 50 - 1 in float, so any other program (the Rust test
 * runtime/tests/c_api.rs does) can feed the same values and compare the checksums: the sum of
 * the logits in double precision, in order, and the FNV-1a 64 hash of their bytes. Results do
 * not depend on the thread count.
 *
 * Build: see README.md next to this file. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2enc.h"

static size_t numel(const int64_t *shape, int rank) {
    size_t n = 1;
    for (int k = 0; k < rank; k++) n *= (size_t)shape[k];
    return n;
}

/* Prints every input (output = 0) or output (output = 1) shape; returns how many there are. */
static int print_ports(const e2enc_model *m, int output) {
    int64_t s[5];
    int i = 0, rank;
    while ((rank = e2enc_shape(m, output, i, s)) >= 0) {
        printf("%s %d: [", output ? "output" : "input", i);
        for (int k = 0; k < rank; k++) printf(k ? ", %" PRId64 : "%" PRId64, s[k]);
        printf("]\n");
        i++;
    }
    return i;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s BUNDLE_DIR [THREADS]\n", argv[0]);
        return 2;
    }
    int threads = argc == 3 ? atoi(argv[2]) : 0;
    char err[1024];

    /* $E2ENC_DEVICE picks the device (cpu, cuda, cuda:N, emulate); unset: e2enc_load, the CPU. */
    const char *device = getenv("E2ENC_DEVICE");
    e2enc_model *m = device ? e2enc_load_on(argv[1], device, threads, err, sizeof err)
                            : e2enc_load(argv[1], threads, err, sizeof err);
    if (!m) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (print_ports(m, 0) < 1 || print_ports(m, 1) < 1) {
        fprintf(stderr, "error: the bundle has no input or no output\n");
        e2enc_free(m);
        return 1;
    }

    int64_t in_shape[5], out_shape[5];
    size_t nx = numel(in_shape, e2enc_shape(m, 0, 0, in_shape));
    size_t ny = numel(out_shape, e2enc_shape(m, 1, 0, out_shape));
    float *x = malloc(nx * sizeof *x), *y = malloc(ny * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "error: out of memory\n");
        free(x);
        free(y);
        e2enc_free(m);
        return 1;
    }
    for (size_t i = 0; i < nx; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;

    int rc = e2enc_run(m, x, nx, y, ny, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", err);
    } else {
        double sum = 0.0;
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < ny; i++) {
            uint32_t bits;
            memcpy(&bits, &y[i], sizeof bits);
            sum += (double)y[i];
            for (int b = 0; b < 4; b++) {
                h ^= (bits >> (8 * b)) & 0xff;
                h *= 0x100000001b3ull;
            }
        }
        printf("sum %.17g\n", sum);
        printf("fnv1a %016" PRIx64 "\n", h);
    }
    free(x);
    free(y);
    e2enc_free(m);
    return rc == 0 ? 0 : 1;
}
