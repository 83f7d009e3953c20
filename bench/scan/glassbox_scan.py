"""The Glassbox side of bench/scan.sh: against a running glassboxd (serving the model and the SAE,
with the corpus under its --corpus_dir), a scan of 1,000 MLP neurons and one of every feature of
the SAE, each timed from StartScan to the job's success (both passes, all statistics and records).
Prints one JSON line per scan. Needs the glassbox Python package (its gRPC modules).
"""

from __future__ import annotations

import argparse
import json
import time

import grpc

from glassbox._proto.glassbox.v1 import glassbox_pb2 as pb
from glassbox._proto.glassbox.v1 import glassbox_pb2_grpc as pb_grpc


def scan(stub, model: str, target: pb.ScanTarget, kind: str, context_length: int) -> dict:
    request = pb.StartScanRequest(model=model, corpus=pb.ScanCorpus(path="tokens.npy"),
                                  targets=[target], context_length=context_length)
    start = time.perf_counter()
    job = stub.StartScan(request)
    final = None
    for info in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)):
        final = info
    seconds = time.perf_counter() - start
    if final is None or final.state != pb.JOB_SUCCEEDED:
        raise SystemExit(f"scan {job.job_id} ended {final}")
    tokens = final.contexts_total * context_length
    return {"kind": kind, "side": "glassbox", "targets": final.targets, "tokens": tokens,
            "seconds": seconds, "tokens_per_s": tokens / seconds,
            "target_tokens_per_s": tokens * final.targets / seconds, "passes": final.passes}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--model", default="gpt2-small")
    p.add_argument("--sae", default="res5")
    p.add_argument("--layer", type=int, default=5)
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--context-length", type=int, default=128)
    args = p.parse_args()
    stub = pb_grpc.GlassboxStub(grpc.insecure_channel(args.address))
    neurons = pb.ScanTarget(neurons=pb.NeuronTargets(hook=f"blocks.{args.layer}.mlp.hook_post",
                                                     indices=list(range(args.neurons))))
    print(json.dumps(scan(stub, args.model, neurons, "neurons", args.context_length)), flush=True)
    features = pb.ScanTarget(sae_features=pb.SaeFeatureTargets(sae=args.sae))
    print(json.dumps(scan(stub, args.model, features, "sae_features", args.context_length)), flush=True)


if __name__ == "__main__":
    main()
