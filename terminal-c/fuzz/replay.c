/*
 * Runs the fuzz target over the files named on the command line (the seeds, a crash found by
 * a fuzzer), for builds without libFuzzer: the suite compiles it with the sanitizers and replays
 * the seeds. Prints how many files it ran.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t input[1u << 20];

int main(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        size_t n;
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        n = fread(input, 1, sizeof input, f);
        fclose(f);
        LLVMFuzzerTestOneInput(input, n);
    }
    printf("replayed %d inputs\n", argc - 1);
    return 0;
}
