// llama.cpp's logits at every position of fixed-length chunks of token ids, as float32: the
// peer's side of benches/fidelity.py. Built against the llama.cpp sources and libraries of the
// llama-cpp-python sdist (see benches/README.md); not part of the package.
//
//   llama_logits MODEL.gguf CHUNKS.i32 CTX OUT.f32 [THREADS [LAST]]
//
// CHUNKS.i32 holds n * CTX little-endian int32 token ids; OUT.f32 receives n * LAST * n_vocab
// floats, the logits of the last LAST positions of each chunk (default: all CTX). Each chunk is
// decoded in one batch from an empty cache, with llama.cpp's default context settings
// otherwise.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

static int fail(const char * what) {
    std::fprintf(stderr, "llama_logits: %s\n", what);
    return 1;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        return fail("usage: llama_logits MODEL.gguf CHUNKS.i32 CTX OUT.f32 [THREADS [LAST]]");
    }
    const int ctx_len = std::atoi(argv[3]);
    const int threads = argc > 5 ? std::atoi(argv[5]) : 2;
    const int last = argc > 6 ? std::atoi(argv[6]) : ctx_len;
    if (ctx_len <= 0 || threads <= 0 || last <= 0 || last > ctx_len) {
        return fail("CTX and THREADS must be positive, LAST in 1..=CTX");
    }

    std::FILE * in = std::fopen(argv[2], "rb");
    if (!in) {
        return fail("cannot open the chunks file");
    }
    std::vector<llama_token> ids;
    llama_token id;
    while (std::fread(&id, sizeof(id), 1, in) == 1) {
        ids.push_back(id);
    }
    std::fclose(in);
    if (ids.empty() || ids.size() % ctx_len != 0) {
        return fail("the chunks file does not hold whole chunks of CTX ids");
    }

    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        return fail("cannot load the model");
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = ctx_len;
    cp.n_batch = ctx_len;
    cp.n_ubatch = ctx_len;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;

    std::FILE * out = std::fopen(argv[4], "wb");
    if (!out) {
        return fail("cannot open the output file");
    }
    llama_batch batch = llama_batch_init(ctx_len, 0, 1);
    for (size_t start = 0; start < ids.size(); start += ctx_len) {
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) {
            return fail("cannot create a context");
        }
        batch.n_tokens = ctx_len;
        for (int i = 0; i < ctx_len; ++i) {
            batch.token[i] = ids[start + i];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = i >= ctx_len - last;
        }
        if (llama_decode(ctx, batch) != 0) {
            return fail("decode failed");
        }
        for (int i = ctx_len - last; i < ctx_len; ++i) {
            const float * logits = llama_get_logits_ith(ctx, i);
            if (std::fwrite(logits, sizeof(float), n_vocab, out) != size_t(n_vocab)) {
                return fail("cannot write the logits");
            }
        }
        llama_free(ctx);
    }
    llama_batch_free(batch);
    std::fclose(out);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
