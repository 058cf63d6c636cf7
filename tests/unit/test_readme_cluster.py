"""The README's "Several nodes" cluster file, as written, is one `fastserve launch` accepts
and the default model splits over (parsed and validated only: no servers are started)."""

from __future__ import annotations

from fastserve.deploy.cluster import ClusterSpec, node_children, node_config
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.model.config import ModelConfig
from fastserve.runtime.model.parallel import TPGroup, split_layers
from fastserve.runtime.model.registry import resolve_model_dir
from tests.readme import code_blocks, section


def readme_cluster_file() -> str:
    """The ```toml block of the README's "Several nodes" section."""
    blocks = code_blocks("toml", section("Several nodes"))
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_readme_cluster_file_parses_and_fits_the_default_model(tmp_path, default_model_dir):
    path = tmp_path / "cluster.toml"
    path.write_text(readme_cluster_file())
    spec = ClusterSpec.load(path)  # validates: workers over all nodes == tp * pp
    model_dir = resolve_model_dir(spec.model) if spec.model else default_model_dir
    cfg = ModelConfig.from_model_dir(model_dir)
    # What the workers will split, with the engine's own rules (each raises if uneven).
    for rank in range(spec.tp):
        tp = TPGroup(rank, spec.tp)
        tp.shard(cfg.num_heads, "num_heads")
        tp.shard(cfg.num_kv_heads, "num_kv_heads")
        tp.shard(cfg.intermediate_size, "intermediate_size")
    assert len(split_layers(cfg.num_layers, spec.pp)) == spec.pp
    assert cfg.num_heads % spec.tp == 0 and cfg.num_kv_heads % spec.tp == 0
    ranks = []
    for node in range(len(spec.nodes)):
        node_cfg = node_config(spec, node, ServerConfig())
        assert (node_cfg.parallel.tp, node_cfg.parallel.pp) == (spec.tp, spec.pp)
        ranks += [c.rank for c in node_children(spec, node) if c.role == "worker"]
    assert ranks == list(range(spec.tp * spec.pp))
