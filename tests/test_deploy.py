"""The Kubernetes deployment files parse and agree with the project (no Docker daemon here: building
the image is documented, not tested)."""

import json
import re
from pathlib import Path

import yaml
from recsys.tracking import mlflow_internals

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"


def test_the_rendered_docker_env_variant_has_the_same_entry_points_and_commands(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("render", K8S / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    render.render("example.org/recsys:abc", tmp_path / "MLproject")
    main, variant = mlflow_internals.load_project(ROOT), mlflow_internals.load_project(tmp_path)
    assert variant.docker_env["image"] == "example.org/recsys:abc"
    assert set(variant._entry_points) == set(main._entry_points)
    for name, ep in main._entry_points.items():
        other = variant._entry_points[name]
        assert other.command == ep.command
        assert {k: (p.type, p.default) for k, p in other.parameters.items()} == \
            {k: (p.type, p.default) for k, p in ep.parameters.items()}


def test_the_image_holds_what_the_commands_run():
    docker = (K8S / "Dockerfile").read_text()
    assert "PYTHONPATH=/app" in docker and "WORKDIR /app" in docker
    copied = set(re.findall(r"^COPY (\S+?)/? ", docker, re.M))
    for name, ep in mlflow_internals.entry_points(ROOT).items():
        module = re.match(r"python -m (steps\.\w+)", ep.command).group(1)
        assert "steps" in copied and (ROOT / (module.replace(".", "/") + ".py")).exists(), name
    assert {"recsys", "configs", "MLproject"} <= copied
    pinned = next(d for d in yaml.safe_load((ROOT / "python_env.yaml").read_text())["dependencies"]
                  if d.startswith("torch=="))
    assert f"pip install {pinned}" in docker  # the same CPU torch as the project's environment


def test_the_backend_config_and_job_template_are_what_mlflow_expects():
    cfg = json.loads((K8S / "kubernetes_config.json").read_text())
    assert {"kube-context", "repository-uri", "kube-job-template-path"} <= set(cfg)
    template = yaml.safe_load((ROOT / cfg["kube-job-template-path"]).read_text())
    assert template["kind"] == "Job" and template["apiVersion"] == "batch/v1"
    container = template["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "{replaced with URI of Docker image created during Project execution}"
    assert container["command"] == ["{replaced with MLflow Project entry point command}"]
    assert "MLFLOW_TRACKING_URI" in {e["name"] for e in container["env"]}
