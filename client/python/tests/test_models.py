"""ListModels / GetModelInfo through Client.models() and Client.model()."""

import glassbox

EXPECTED = {
    # name: (architecture, n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab, n_ctx)
    "tiny-gpt2": ("gpt2", 2, 64, 4, 4, 16, 256, 300, 32),
    "tiny-llama": ("llama", 2, 64, 4, 2, 16, 96, 300, 64),
    "demo": ("gpt2", 4, 128, 4, 4, 32, 512, 1024, 128),
}


def _dims(info: glassbox.ModelInfo):
    return (
        info.architecture, info.n_layers, info.d_model, info.n_heads, info.n_kv_heads,
        info.d_head, info.d_mlp, info.d_vocab, info.n_ctx,
    )


def test_models_lists_the_fixtures_and_the_demo_model(client):
    infos = {m.name: m for m in client.models()}
    assert set(infos) == set(EXPECTED)
    for name, info in infos.items():
        assert _dims(info) == EXPECTED[name]
        assert info.dtype == "f32"
        assert info.device == "cpu"
        assert info.has_tokenizer is (name == "demo")
        assert info.hook_points == ()  # ListModels leaves them out


def test_model_info_has_hook_points_in_forward_order(client):
    gpt2 = client.model("tiny-gpt2")
    assert _dims(gpt2.info) == EXPECTED["tiny-gpt2"]
    assert gpt2.cfg is gpt2.info
    names = gpt2.info.hook_names
    assert names[0] == "hook_embed"
    assert "hook_pos_embed" in names
    assert names.index("blocks.0.hook_resid_post") < names.index("blocks.1.hook_resid_pre")
    assert names[-1] == "ln_final.hook_normalized"
    assert not any("rot_q" in n for n in names)

    resid = gpt2.info.hook_point("blocks.1.hook_resid_post")
    assert resid.layer == 1
    assert resid.dim_names == ("batch", "pos", "d_model")
    assert resid.shape == (None, None, 64)
    assert gpt2.info.hook_point("hook_embed").layer is None

    llama = client.model("tiny-llama")
    assert "blocks.1.attn.hook_rot_q" in llama.info.hook_names
    assert "hook_pos_embed" not in llama.info.hook_names
    k = llama.info.hook_point("blocks.0.attn.hook_k")
    assert k.dim_names == ("batch", "pos", "kv_head_index", "d_head")
    assert k.shape == (None, None, 2, 16)


def test_model_info_describes_the_rotary_embedding(client):
    gpt2, llama = client.model("tiny-gpt2").info, client.model("tiny-llama").info
    assert (gpt2.rotary_dim, gpt2.rope_theta) == (0, 0.0)  # learned positions
    assert (llama.rotary_dim, llama.rope_theta, llama.rope_local_theta) == (16, 10000.0, 0.0)
    assert llama.rotary_adjacent_pairs is False
    assert gpt2.unembed_bias is False and llama.unembed_bias is False
