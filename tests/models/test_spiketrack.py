"""SpikeTrack (RGB): official checkpoint layout for all six variants, both branches, and agreement
with reference outputs of the official code (``../shared/fixtures/spiketrack``, see its README).

The fixture tests skip with a reason when the fixtures are absent (a clone outside this
repository's CI has no ``../shared``). The S256-T1 checkpoint (~48 MB) is generated once per test
session with the fixtures' ``make_weights.py`` (seed 0) into a temporary directory.
"""

import collections
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx as fx

from spikedeploy.errors import CheckpointError, ConfigError
from spikedeploy.models.layers import SpikeLinearAttention, _FrozenBatchNorm
from spikedeploy.models.neurons import NILIF, SpikingNeuron
from spikedeploy.models.spiketrack import (
    MEMORY_KEYS,
    SPIKETRACK_VARIANTS,
    VARIANT_CONFIGS,
    HeadOutputs,
    SpikeTrack,
    decode_boxes,
    hann_window,
    head_maps,
    identify_variant,
    load_spiketrack_checkpoint,
    load_spiketrack_state_dict,
    normalize_images,
    spiketrack,
    spiketrack_from_checkpoint,
)
from spikedeploy.models.spiketrack_blocks import MemoryRead, MemoryWrite, TemplateGate

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "spiketrack"
S256 = FIXTURES / "s256-t1"
needs_fixtures = pytest.mark.skipif(
    not (S256 / "reference.npz").is_file() or not (FIXTURES / "make_weights.py").is_file(),
    reason=f"SpikeTrack reference fixtures from the official code not found at {FIXTURES} "
    "(they live in ../shared/fixtures next to the repository in CI)",
)

# variants whose forward passes take several seconds on 2 CPU cores
HEAVY = ("spiketrack-b256-t3", "spiketrack-b384-t1", "spiketrack-b384-t3")

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _make_weights_module():
    spec = importlib.util.spec_from_file_location("spiketrack_make_weights", FIXTURES / "make_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _manifest(model: SpikeTrack):
    """The ``[key, shape, dtype]`` manifest of a model's state_dict (official order)."""
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]


def _random_state_dict(model: SpikeTrack, seed: int = 1):
    """Random weights in the official key layout, by the fixtures' make_weights generator."""
    arrays = _make_weights_module().generate(_manifest(model), seed)
    return collections.OrderedDict((k, torch.from_numpy(a)) for k, a in arrays.items())


def _signature_only_state_dict(variant: str):
    """A state dict with the keys and shapes of ``variant`` (zeros; for mismatch errors)."""
    with torch.device("meta"):
        model = spiketrack(variant)
    return {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}


class _RateRecorder:
    """Forward hooks on every NI-LIF: per module name, total integer count and element count over
    all calls (the fixtures' "elementwise" firing rate = count / elements)."""

    def __init__(self, model):
        self.counts = collections.defaultdict(float)
        self.elements = collections.defaultdict(int)
        self.handles = [
            mod.register_forward_hook(self._hook(name)) for name, mod in model.named_modules() if isinstance(mod, NILIF)
        ]

    def _hook(self, name):
        def hook(mod, inputs, output):
            q = torch.round(output.detach() * mod.norm)
            self.counts[name] += float(q.double().sum())
            self.elements[name] += q.numel()

        return hook

    def rates(self):
        return {n: self.counts[n] / self.elements[n] for n in self.counts}

    def reset(self):
        self.counts.clear()
        self.elements.clear()

    def remove(self):
        for h in self.handles:
            h.remove()


def _run_branches(model: SpikeTrack, batch: int = 1, seed: int = 0):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(c.templates, batch, 3, c.resolution, c.resolution, generator=g)
    x = torch.randn(batch, 3, c.resolution, c.resolution, generator=g)
    rec = _RateRecorder(model)
    try:
        with torch.no_grad():
            memory = model.template_branch(z)
            template_rates = rec.rates()
            rec.reset()
            out = model.search_branch(x, memory)
            search_rates = rec.rates()
    finally:
        rec.remove()
    return memory, out, template_rates, search_rates


def _check_branch_outputs(model, memory, out, template_rates, search_rates, batch=1):
    c = model.config
    assert list(memory) == list(MEMORY_KEYS)
    for key, shape in c.memory_shapes(batch).items():
        assert tuple(memory[key].shape) == shape, key
        assert torch.isfinite(memory[key]).all()
    F_ = c.feat_size
    assert isinstance(out, HeadOutputs)
    assert out.score_logits.shape == (1, batch, 1, F_, F_)
    assert out.size_logits.shape == (1, batch, 2, F_, F_)
    assert out.offset.shape == (1, batch, 2, F_, F_)
    assert all(torch.isfinite(t).all() for t in out)
    # every neuron layer of each branch runs and fires (the gate only with T > 1)
    n_neurons = sum(isinstance(m, NILIF) for m in model.modules())
    n_mrm_template_only = 2 * 6  # k_spike, v_spike of the six retrievers
    n_gate = 2 * 6  # gate.mlp.1 and gate_spike
    expected_search = n_neurons - n_mrm_template_only - (0 if c.templates > 1 else n_gate)
    assert len(search_rates) == expected_search
    assert len(template_rates) == 122  # backbone (4 per downsample ... ) + 3 per retriever, any variant
    silent = [n for n, r in {**template_rates, **search_rates}.items() if r == 0]
    assert not silent, f"{c.name}: silent neuron layers {silent[:5]}"


# ---------------------------------------------------------------------------------------------
# variants, layout, loading
# ---------------------------------------------------------------------------------------------


def test_six_variants_and_configs():
    assert SPIKETRACK_VARIANTS == (
        "spiketrack-s256-t1", "spiketrack-s256-t3", "spiketrack-b256-t1",
        "spiketrack-b256-t3", "spiketrack-b384-t1", "spiketrack-b384-t3",
    )
    s, b384 = VARIANT_CONFIGS["spiketrack-s256-t1"], VARIANT_CONFIGS["spiketrack-b384-t3"]
    assert (s.embed_dims, s.head_channels, s.resolution, s.templates, s.feat_size) == ((32, 64, 128, 192), 192, 256, 1, 16)
    assert (b384.embed_dims, b384.head_channels, b384.resolution, b384.templates, b384.feat_size) == (
        (64, 128, 256, 360), 256, 384, 3, 24)
    assert s.name == "SpikeTrack-S256-T1" and b384.variant == "spiketrack-b384-t3"


@pytest.mark.parametrize("name,expected", [
    ("s256", "spiketrack-s256-t1"), ("S256", "spiketrack-s256-t1"), ("spiketrack-b384-t3", "spiketrack-b384-t3"),
    ("b256_t3", "spiketrack-b256-t3"),
])
def test_factory_names(name, expected):
    with torch.device("meta"):
        assert spiketrack(name).config.variant == expected


@pytest.mark.parametrize("name,templates", [("s384", None), ("x256", None), ("s256", 4), ("s256-t1", 3), (256, None)])
def test_factory_rejects_unknown_variants(name, templates):
    with pytest.raises(ConfigError, match="SpikeTrack"):
        spiketrack(name, templates)


@needs_fixtures
def test_state_dict_layout_equals_official_manifest():
    """Keys, shapes, dtypes and order of S256-T1 equal the official checkpoint's ``net`` dict."""
    manifest = json.loads((S256 / "manifest.json").read_text())
    with torch.device("meta"):
        model = spiketrack("s256", 1)
    assert _manifest(model) == manifest
    # NI-LIF leaks: official mem_update(time_step=4) -> decay of shape (3,)
    assert all(m.decay.shape == (3,) and m.d == 4 for m in model.modules() if isinstance(m, NILIF))


@needs_fixtures
@pytest.mark.parametrize("variant", SPIKETRACK_VARIANTS)
def test_random_checkpoint_in_official_layout_loads_strictly_and_runs(variant):
    model = spiketrack(variant)
    sd = _random_state_dict(model, seed=1)
    assert identify_variant(sd) == variant
    load_spiketrack_state_dict(model, sd, source=f"random {variant}")
    assert torch.equal(model.state_dict()["decoder.spike.decay"], sd["decoder.spike.decay"])
    if variant in HEAVY:
        return  # forward in test_heavy_variants_run (slow)
    _check_branch_outputs(model, *_run_branches(model))


@needs_fixtures
@pytest.mark.slow
@pytest.mark.parametrize("variant", HEAVY)
def test_heavy_variants_run(variant):
    model = spiketrack(variant)
    load_spiketrack_state_dict(model, _random_state_dict(model, seed=1))
    _check_branch_outputs(model, *_run_branches(model))


@pytest.mark.parametrize("have,want", [
    ("spiketrack-b256-t1", "spiketrack-s256-t1"),
    ("spiketrack-s256-t3", "spiketrack-s256-t1"),
    ("spiketrack-b384-t1", "spiketrack-b256-t1"),
    ("spiketrack-s256-t1", "spiketrack-b256-t3"),
])
def test_wrong_variant_checkpoint_names_the_mismatch(have, want):
    sd = _signature_only_state_dict(have)
    with torch.device("meta"):
        model = spiketrack(want)
    have_name, want_name = VARIANT_CONFIGS[have].name, VARIANT_CONFIGS[want].name
    with pytest.raises(CheckpointError) as err:
        load_spiketrack_state_dict(model, sd, source="ckpt.pth.tar")
    msg = str(err.value)
    assert f"looks like {have_name} weights, not {want_name}" in msg
    assert "variant mismatch" in msg and "ckpt.pth.tar" in msg
    assert "missing keys" in msg or "unexpected keys" in msg or "shape conflicts" in msg


def test_foreign_checkpoint_lists_keys():
    with torch.device("meta"):
        model = spiketrack("s256")
    sd = _signature_only_state_dict("spiketrack-s256-t1")
    del sd["decoder.spike.decay"]
    sd["encoder.extra.weight"] = torch.zeros(3)
    sd["decoder.conv5_ctr.bias"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as err:
        load_spiketrack_state_dict(model, sd, source="x.pth")
    msg = str(err.value)
    assert "variant mismatch" not in msg
    assert "decoder.spike.decay" in msg and "encoder.extra.weight" in msg
    assert "decoder.conv5_ctr.bias: model expects [1], checkpoint has [2]" in msg


def test_corrupt_and_truncated_checkpoint_files(tmp_path):
    good = tmp_path / "good.pth.tar"
    torch.save({"net": {"encoder.a": torch.zeros(1000)}}, good)
    bad = tmp_path / "truncated.pth.tar"
    bad.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint at all")
    with torch.device("meta"):
        model = spiketrack("s256")
    for path in (bad, garbage):
        with pytest.raises(CheckpointError, match=re.escape(str(path.name))):
            load_spiketrack_checkpoint(model, path)
    with pytest.raises(CheckpointError, match="no key 'net'"):
        torch.save({"state_dict": {}}, good)
        load_spiketrack_checkpoint(model, good)


def test_bad_inputs_are_clear_errors():
    model = spiketrack("s256")
    with pytest.raises(ValueError, match=r"template_branch: expected \[T=1, B, 3, 256, 256\]"):
        model.template_branch(torch.zeros(2, 1, 3, 256, 256))
    with pytest.raises(ValueError, match="search_branch"):
        model.search_branch(torch.zeros(1, 3, 128, 128), {})
    mem = {k: torch.zeros(s) for k, s in model.config.memory_shapes(1).items()}
    with pytest.raises(ValueError, match="lacks"):
        model.search_branch(torch.zeros(1, 3, 256, 256), {"cross_block_0": mem["cross_block_0"]})
    with pytest.raises(ValueError, match=r"memory cross_block_0 has shape \[1, 2, 8, 4, 16\]"):
        model.search_branch(torch.zeros(1, 3, 256, 256), {**mem, "cross_block_0": torch.zeros(1, 2, 8, 4, 16)})


# ---------------------------------------------------------------------------------------------
# leaf modules and host parts
# ---------------------------------------------------------------------------------------------


def test_memory_write_read_match_the_official_formula():
    g = torch.Generator().manual_seed(0)
    T, B, C, Cv, N, H = 3, 2, 16, 64, 20, 4
    k = torch.randint(0, 5, (T, B, C, N), generator=g).float() / 4
    v = torch.randint(0, 5, (T, B, Cv, N), generator=g).float() / 4
    q = torch.randint(0, 5, (T, B, C, N), generator=g).float() / 4
    kv = MemoryWrite(H)(k, v)
    assert kv.shape == (T, B, H, C // H, Cv // H)
    scale = (C // H) ** -0.5
    out = MemoryRead(H, scale * 2)(q, kv)
    # official: heads split as (N, heads, C/heads); (q @ (k^T @ v)) * scale * 2
    split = lambda x, c: x.transpose(-1, -2).reshape(T, B, N, H, c // H).permute(0, 1, 3, 2, 4)
    ref = (split(q, C) @ (split(k, C).transpose(-2, -1) @ split(v, Cv))) * scale * 2
    ref = ref.permute(0, 1, 3, 2, 4).reshape(T, B, N, Cv).permute(0, 1, 3, 2)
    assert torch.equal(out, ref)
    # the same as the self-attention core when q reads its own k^T v
    assert torch.equal(out, SpikeLinearAttention(H, scale * 2)(q, k, v))
    with pytest.raises(ValueError, match="MemoryRead"):
        MemoryRead(H, 1.0)(q[:, :1], kv)


def test_host_decoding():
    score = torch.full((2, 1, 4, 4), 0.1)
    score[0, 0, 1, 2] = 0.9  # y = 1, x = 2
    score[1, 0, 3, 0] = 0.8
    size = torch.rand(2, 2, 4, 4)
    off = torch.rand(2, 2, 4, 4)
    boxes, scores = decode_boxes(score, size, off)
    assert torch.allclose(boxes[0], torch.stack([(2 + off[0, 0, 1, 2]) / 4, (1 + off[0, 1, 1, 2]) / 4,
                                                 size[0, 0, 1, 2], size[0, 1, 1, 2]]))
    assert torch.allclose(boxes[1, :2], torch.stack([(0 + off[1, 0, 3, 0]) / 4, (3 + off[1, 1, 3, 0]) / 4]))
    assert scores.flatten().tolist() == pytest.approx([0.9, 0.8])
    w = hann_window(16)
    assert w.shape == (1, 1, 16, 16) and torch.allclose(w, w.transpose(-1, -2)) and float(w.max()) < 1
    out = HeadOutputs(torch.tensor([-20.0, 0.0, 20.0]).reshape(1, 1, 1, 1, 3), torch.zeros(1, 1, 2, 1, 3),
                      torch.ones(1, 1, 2, 1, 3))
    s, z, o = head_maps(out)
    assert s.flatten().tolist() == pytest.approx([1e-4, 0.5, 1 - 1e-4]) and s.shape == (1, 1, 1, 3)
    assert torch.equal(o, torch.ones(1, 2, 1, 3))
    with pytest.raises(ValueError, match="normalize_images"):
        normalize_images(np.zeros((4, 4), np.uint8))


# ---------------------------------------------------------------------------------------------
# agreement with the official code (S256-T1 fixtures)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s256_checkpoint(tmp_path_factory):
    mw = _make_weights_module()
    manifest = json.loads((S256 / "manifest.json").read_text())
    arrays = mw.generate(manifest, 0)
    info = (S256 / "weights_info.txt").read_text()
    m = re.search(r"sha256=([0-9a-f]{64})", info)
    assert m, "weights_info.txt names no tensor digest"
    assert mw.digest(arrays) == m.group(1), "make_weights.py did not regenerate the fixture weights"
    path = tmp_path_factory.mktemp("spiketrack") / "S256-T1.pth.tar"
    torch.save({"net": collections.OrderedDict((k, torch.from_numpy(a)) for k, a in arrays.items())}, path)
    return path


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(S256 / "reference.npz"))


@pytest.fixture(scope="module")
def s256_run(s256_checkpoint, reference):
    """The S256-T1 model on the reference inputs: memory, per-frame features and head outputs,
    and the firing rates of both branches. Two torch threads: with one, search
    frame 1 flips a spike whose membrane lies within float32 rounding of a threshold (see
    ``tests/conftest.py``); the official fixture reproduces bit for bit with 2, 3, 4 and 8."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return _s256_run(s256_checkpoint, reference)
    finally:
        torch.set_num_threads(before)


def _s256_run(s256_checkpoint, reference):
    model = spiketrack("s256", 1, checkpoint=s256_checkpoint)
    rec = _RateRecorder(model)
    with torch.no_grad():
        memory = model.template_branch(torch.from_numpy(reference["template_input"]))
        template_rates = rec.rates()
        rec.reset()
        feats, outs = [], []
        for x in reference["search_input"]:
            feat = model.search_feature(torch.from_numpy(x), memory)
            feats.append(feat)
            outs.append(HeadOutputs(*model.decoder(feat)))
        search_rates = rec.rates()
    rec.remove()
    return dict(model=model, memory=memory, feats=feats, outs=outs, template_rates=template_rates,
                search_rates=search_rates)


def _max_err(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@needs_fixtures
def test_host_normalization_and_window_match(reference):
    assert _max_err(normalize_images(reference["templates_u8"])[:, None], reference["template_input"]) == 0
    assert _max_err(normalize_images(reference["searches_u8"])[:, None], reference["search_input"]) == 0
    assert _max_err(hann_window(16), reference["hann_window"]) == 0


@needs_fixtures
def test_template_memory_matches_official(s256_run, reference):
    for key in MEMORY_KEYS:
        mine = s256_run["memory"][key]
        assert tuple(mine.shape) == reference[f"cache_{key}"].shape
        assert _max_err(mine, reference[f"cache_{key}"]) <= 1e-6, key


@needs_fixtures
def test_search_head_outputs_and_boxes_match_official(s256_run, reference):
    for i, (feat, out) in enumerate(zip(s256_run["feats"], s256_run["outs"])):
        assert _max_err(feat, reference["search_feature"][i]) <= 1e-4
        assert _max_err(out.score_logits[0], reference["score_logits"][i]) <= 1e-4
        assert _max_err(out.size_logits[0], reference["size_logits"][i]) <= 1e-4
        assert _max_err(out.offset[0], reference["offset_raw"][i]) <= 1e-4
        score, size, offset = head_maps(out)
        assert _max_err(score, reference["score_map"][i]) <= 1e-4
        assert _max_err(size, reference["size_map"][i]) <= 1e-4
        assert _max_err(offset, reference["offset_map"][i]) <= 1e-4
        for window, tag in ((None, "nowindow"), (hann_window(16), "window")):
            box, conf = decode_boxes(score, size, offset, window=window)
            assert _max_err(box, reference[f"bbox_{tag}"][i]) <= 1e-5, tag
            assert _max_err(conf, reference[f"score_{tag}"][i]) <= 1e-5, tag
            assert _max_err(box * 256, reference[f"bbox_{tag}_crop_px"][i]) <= 1e-3, tag


@needs_fixtures
def test_every_search_module_teacher_forced(s256_run, reference):
    """Each top-level search-encoder module fed the official input of its stage reproduces the
    official output of that stage (the robust per-module check of the fixtures' README)."""
    stages = np.load(S256 / "stages_search0.npz")
    meta = json.loads((S256 / "stages_search0.json").read_text())
    encoder = s256_run["model"].encoder
    errors = {}
    with torch.no_grad():
        for k, name in enumerate(meta["module_names"]):
            x = torch.from_numpy(stages[meta["order"][k]])
            module = encoder.get_submodule(name)
            if name.startswith("mrm."):
                kv = torch.from_numpy(reference[f"cache_cross_block_{name.split('.')[1]}"])
                y = module(x, kv)
            else:
                y = module(x)
            errors[name] = _max_err(y, stages[meta["order"][k + 1]])
    bad = {n: e for n, e in errors.items() if e > 1e-5}
    assert not bad, f"teacher-forced stages off: {bad}"


@needs_fixtures
def test_firing_rates_match_official(s256_run):
    sfr = json.loads((S256 / "sfr.json").read_text())
    official_search = sfr["search_elementwise"]
    official_template = {f"encoder.{n}": r for n, r in sfr["template_elementwise"].items()}
    assert set(s256_run["search_rates"]) == set(official_search)
    assert set(s256_run["template_rates"]) == set(official_template)
    dev = {
        n: abs(r - ref)
        for mine, official in ((s256_run["search_rates"], official_search), (s256_run["template_rates"], official_template))
        for n, r in mine.items()
        for ref in [official[n]]
    }
    worst = max(dev, key=dev.get)
    assert dev[worst] <= 0.06, f"firing rate of {worst} deviates by {dev[worst]:.4f}"


@needs_fixtures
def test_checkpoint_identification_and_fx_traceable_search_net(s256_checkpoint, s256_run, reference):
    """The variant is identified from the file; the single-input search net (memory as buffers)
    traces with torch.fx (neurons and spike products as leaves) and reproduces the eager outputs."""
    model = s256_run["model"]
    sd = torch.load(s256_checkpoint, map_location="cpu", weights_only=True)["net"]
    assert identify_variant(sd) == "spiketrack-s256-t1"
    with pytest.raises(CheckpointError, match="looks like SpikeTrack-S256-T1 weights, not SpikeTrack-S256-T3"):
        spiketrack_from_checkpoint(s256_checkpoint, "s256", templates=3)

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            leaves = (SpikingNeuron, SpikeLinearAttention, _FrozenBatchNorm, MemoryRead, MemoryWrite, TemplateGate)
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    def trace(module):
        graph = Tracer().trace(module)
        assert not [n for n in graph.nodes if n.op == "get_attr" and "_tensor_constant" in n.target]
        return fx.GraphModule(module, graph)

    gm = trace(model.search_net(s256_run["memory"]))
    trace(model.template_net())
    with torch.no_grad():
        traced = gm(torch.from_numpy(reference["search_input"][0][None]))
    for a, b in zip(traced, s256_run["outs"][0]):
        assert torch.equal(a, b)
