/* e2enc.h: run compiled E2ENet kernel bundles from C and C++.
 *
 * Link with libe2enc_runtime.so (cargo build --release -p e2enc-runtime). A bundle is the folder
 * `e2enc compile model.json -o bundle/` writes; loading verifies the bundle's signature, every
 * file's checksum and the CPU's features before any code is loaded.
 *
 * Signatures. `e2enc compile` signs manifest.json (which holds every file's sha256) into
 * manifest.sig with the user's key; e2enc_load refuses a bundle whose signature does not verify,
 * and, unless E2ENC_TRUST_UNSIGNED=1 is set, one that is unsigned or signed by a key not trusted
 * here. Trusted keys, from the environment of the process:
 *   - the local key: signing_key in $E2ENC_HOME, else $XDG_CONFIG_HOME/e2enc, else ~/.config/e2enc
 *     (the key `e2enc compile` signs with by default, on this machine);
 *   - the public key lines (`e2enc-ed25519 HEX [comment]`, # comments) of the file named by
 *     $E2ENC_TRUSTED_KEYS, else of trusted_keys in that same folder, if it exists.
 * Set them before the first call; the error message names the bundle and the signing key's
 * fingerprint.
 *
 *   char err[512];
 *   e2enc_model *m = e2enc_load("bundle", 0, err, sizeof err);   // 0 threads: all cores
 *   if (!m) { fprintf(stderr, "%s\n", err); return 1; }
 *   int64_t in[5], out[5];
 *   e2enc_shape(m, 0, 0, in);                                    // input  [N, C, D, H, W]
 *   e2enc_shape(m, 1, 0, out);                                   // logits [N, K, D, H, W]
 *   if (e2enc_run(m, x, nx, y, ny, err, sizeof err)) { ... }
 *   e2enc_free(m);
 */
#ifndef E2ENC_H
#define E2ENC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct E2encModel e2enc_model;

/* Loads and verifies a bundle (signature as above, checksums, CPU features), then loads its code.
 * NULL on error, with a NUL-terminated message in err. */
e2enc_model *e2enc_load(const char *bundle_dir, int threads, char *err, size_t err_len);

/* e2enc_load onto a device: "cpu" (as e2enc_load), "cuda" or "cuda:N" (NVIDIA GPU N: a bundle
 * compiled with --target cuda-sm80|cuda-sm90, a runtime built with its `cuda` feature, which
 * loads libcuda only here), or "emulate" (a CUDA bundle's kernels on this CPU through the host
 * emulation: slow, for checking; needs a C++ compiler, $CXX or c++). NULL on error with the
 * message in err (a CUDA bundle on the CPU, no GPU or driver, a driver older than the bundle
 * needs, a GPU older than its target, too little GPU memory for its arena). */
e2enc_model *e2enc_load_on(const char *bundle_dir, const char *device, int threads, char *err,
                           size_t err_len);

/* Shape of input (output = 0) or output (output = 1) number `index` into shape[5].
 * Returns the rank, or -1 if there is no such port. */
int e2enc_shape(const e2enc_model *m, int output, int index, int64_t shape[5]);

/* Runs one batch: input holds input_len floats (row-major NCDHW), output receives the first
 * output (logits), output_len floats. Returns 0 on success, non-zero with a message in err.
 * The calling thread computes tiles too, with a tile's working set on its stack (up to 640 KiB
 * in bf16 bundles): call from a thread with 1 MiB of stack or more (glibc's default is 8 MiB;
 * musl's 128 KiB is too small). The model's own threads have 4 MiB. */
int e2enc_run(e2enc_model *m, const float *input, size_t input_len, float *output, size_t output_len,
              char *err, size_t err_len);

/* Frees a model (NULL is ignored). */
void e2enc_free(e2enc_model *m);

#ifdef __cplusplus
}
#endif

#endif /* E2ENC_H */
