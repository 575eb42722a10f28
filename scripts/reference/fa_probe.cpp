// fa_probe: first-step top-10 logits + 32 greedy steps with margins, for a given
// flash-attention setting and thread count. Prints one JSON object on stdout.
//
// usage: fa_probe MODEL PROMPT FA(on|off|auto) THREADS [N_CTX=256] [N_PREDICT=32] [LOGITS_OUT.f32|""] [KV=f16|f32|bf16]
#include "llama.h"

#include <algorithm>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

static std::string json_escape(const std::string & s) {
    std::string o;
    for (unsigned char c : s) {
        switch (c) {
            case '"':  o += "\\\""; break;
            case '\\': o += "\\\\"; break;
            case '\n': o += "\\n"; break;
            case '\r': o += "\\r"; break;
            case '\t': o += "\\t"; break;
            default:
                if (c < 0x20) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); o += b; }
                else o += (char) c;
        }
    }
    return o;
}

static std::vector<int> topk(const float * l, int n, int k) {
    std::vector<int> idx(n);
    for (int i = 0; i < n; i++) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
        return l[a] > l[b] || (l[a] == l[b] && a < b);
    });
    idx.resize(k);
    return idx;
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL PROMPT on|off|auto THREADS [N_CTX] [N_PREDICT] [LOGITS_OUT]\n", argv[0]);
        return 1;
    }
    const std::string model_path = argv[1];
    const std::string prompt     = argv[2];
    const std::string fa         = argv[3];
    const int n_threads          = atoi(argv[4]);
    const int n_ctx              = argc > 5 ? atoi(argv[5]) : 256;
    const int n_predict          = argc > 6 ? atoi(argv[6]) : 32;
    const char * logits_out      = argc > 7 && argv[7][0] ? argv[7] : nullptr;
    const std::string kv         = argc > 8 ? argv[8] : "f16";

    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    // tokenize exactly like llama-tokenize: add_special = model wants BOS, parse_special = true
    const bool add_bos = llama_vocab_get_add_bos(vocab);
    std::vector<llama_token> toks(prompt.size() + 8);
    int nt = llama_tokenize(vocab, prompt.data(), prompt.size(), toks.data(), toks.size(), add_bos, true);
    if (nt < 0) { toks.resize(-nt); nt = llama_tokenize(vocab, prompt.data(), prompt.size(), toks.data(), toks.size(), add_bos, true); }
    toks.resize(nt);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = n_ctx;
    cp.n_batch         = n_ctx;
    cp.n_ubatch        = n_ctx;
    cp.n_threads       = n_threads;
    cp.n_threads_batch = n_threads;
    cp.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                       : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                       : LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.type_k = cp.type_v = kv == "f32" ? GGML_TYPE_F32 : kv == "bf16" ? GGML_TYPE_BF16 : GGML_TYPE_F16;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "ctx failed\n"); return 1; }

    // prompt in one batch, logits only for the last position
    llama_batch batch = llama_batch_init(std::max<int>(nt, 1), 0, 1);
    batch.n_tokens = nt;
    for (int i = 0; i < nt; i++) {
        batch.token[i] = toks[i]; batch.pos[i] = i; batch.n_seq_id[i] = 1; batch.seq_id[i][0] = 0;
        batch.logits[i] = (i == nt - 1);
    }
    if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "decode failed\n"); return 1; }

    std::string out = "{";
    out += "\"model\": \"" + json_escape(model_path) + "\", \"prompt\": \"" + json_escape(prompt) + "\"";
    out += ", \"fa\": \"" + fa + "\", \"kv\": \"" + kv + "\", \"threads\": " + std::to_string(n_threads) + ", \"n_ctx\": " + std::to_string(n_ctx);
    out += ", \"add_bos\": " + std::string(add_bos ? "true" : "false");
    out += ", \"prompt_ids\": [";
    for (int i = 0; i < nt; i++) out += (i ? ", " : "") + std::to_string(toks[i]);
    out += "]";

    std::vector<llama_token> gen;
    std::vector<float> margins;
    std::vector<std::vector<std::pair<int,float>>> step_top5;
    char buf[64];
    int pos = nt;
    for (int step = 0; step < n_predict; step++) {
        const float * l = llama_get_logits_ith(ctx, -1);
        if (step == 0) {
            auto t10 = topk(l, n_vocab, 10);
            out += ", \"first_step_top10\": [";
            for (int i = 0; i < 10; i++) {
                snprintf(buf, sizeof buf, "%s[%d, %.6f]", i ? ", " : "", t10[i], l[t10[i]]);
                out += buf;
            }
            out += "]";
            if (logits_out) {
                FILE * f = fopen(logits_out, "wb");
                if (f) { fwrite(l, sizeof(float), n_vocab, f); fclose(f); }
            }
        }
        auto t5 = topk(l, n_vocab, 5);
        std::vector<std::pair<int,float>> s5;
        for (int i : t5) s5.push_back({i, l[i]});
        step_top5.push_back(s5);
        const llama_token id = t5[0];
        gen.push_back(id);
        margins.push_back(l[t5[0]] - l[t5[1]]);
        if (step + 1 == n_predict) break;
        batch.n_tokens = 1;
        batch.token[0] = id; batch.pos[0] = pos++; batch.n_seq_id[0] = 1; batch.seq_id[0][0] = 0; batch.logits[0] = 1;
        if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "decode failed at step %d\n", step); return 1; }
    }
    out += ", \"greedy_ids\": [";
    for (size_t i = 0; i < gen.size(); i++) out += (i ? ", " : "") + std::to_string(gen[i]);
    out += "], \"greedy_margins\": [";
    for (size_t i = 0; i < margins.size(); i++) { snprintf(buf, sizeof buf, "%s%.6f", i ? ", " : "", margins[i]); out += buf; }
    out += "], \"step_top5\": [";
    for (size_t s = 0; s < step_top5.size(); s++) {
        out += s ? ", [" : "[";
        for (size_t i = 0; i < step_top5[s].size(); i++) {
            snprintf(buf, sizeof buf, "%s[%d, %.6f]", i ? ", " : "", step_top5[s][i].first, step_top5[s][i].second);
            out += buf;
        }
        out += "]";
    }
    out += "], \"greedy_text\": \"";
    std::string text;
    for (auto id : gen) {
        char pb[256];
        int n = llama_token_to_piece(vocab, id, pb, sizeof pb, 0, true);
        if (n > 0) text.append(pb, n);
    }
    out += json_escape(text) + "\"}";
    printf("%s\n", out.c_str());

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
