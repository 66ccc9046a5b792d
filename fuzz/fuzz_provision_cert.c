/*
 * fuzz_provision_cert.c — libFuzzer harness for the certificate a device
 * registers with by claim (src/registry/provision.c): PEM text from the
 * network, read by OpenSSL through drv_provision_check_cert.
 *
 * Input: the bytes as certificate_pem (NUL-terminated copy), checked for
 * device id "x" (the CN the seeds carry).  Checked: no crash or leak; an
 * accepted certificate has a 64-digit lower-case hex fingerprint and no
 * reason; a refused one has a reason.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry/provision.h"

#define FUZZ_ASSERT(c) \
    do {               \
        if (!(c))      \
            abort();   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 20000)
        return 0;
    char *pem = malloc(size + 1);
    if (!pem)
        return 0;
    memcpy(pem, data, size);
    pem[size] = '\0';
    char fp[65] = "";
    const char *why = NULL;
    bool ok = drv_provision_check_cert(pem, "x", fp, &why);
    if (ok) {
        FUZZ_ASSERT(why == NULL && strlen(fp) == 64);
        for (size_t i = 0; i < 64; i++)
            FUZZ_ASSERT((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f'));
    } else {
        FUZZ_ASSERT(why != NULL);
    }
    free(pem);
    return 0;
}
