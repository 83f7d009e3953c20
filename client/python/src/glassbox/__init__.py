"""Python client for Glassbox, a gRPC server for interpretability research on transformer LMs.

    import glassbox
    client = glassbox.connect("localhost:50051")
    model = client.model("gpt2")
    logits, cache = model.run_with_cache("The cat sat on the", names_filter="blocks.*.hook_resid_post")
    cache["blocks.3.hook_resid_post"].shape   # (1, pos, d_model), a numpy array

Names follow TransformerLens: hook names, ``run_with_cache``, ``run_with_hooks``, ``to_tokens``,
``to_str_tokens``, ``ActivationCache``, ``cfg``. Interventions are typed objects (``Zero``,
``Scale``, ``Add``, ``Set``, ``MeanAblate``, ``PatchRows``) passed as ``interventions=``;
analyses run on the server (``patching_sweep``, ``logit_lens``, ``direct_logit_attribution``,
``attention_norms``; ``detect_heads`` scores induction, duplicate-token and previous-token heads
from captured patterns). SAEs loaded with the server: ``model.saes()``, ``model.sae_encode``,
``model.sae_decode``, and ``run(..., saes=[SaeSplice(name, edits=[FeatureEdit(...)])],
sae_steering=[SaeSteer(...)])``. Dataset scans run as server-side jobs: ``model.start_scan(corpus,
neurons=...)`` returns a ``ScanJob`` (``wait()``, ``all_results()``: ``ScanTargetResult``s with
top, sampled and quantile records, statistics and a histogram); ``client.jobs()`` lists them.
``job.write_dashboards(dir)`` / ``dashboard_html`` render them as static HTML pages;
``to_neuronpedia_json`` and ``to_neuron_explainer_records`` export them.
Every server error is a ``GlassboxError`` subclass carrying the gRPC status ``code`` and
``message``.
"""

from ._analyses import (
    AttentionNormsLayer,
    AttentionNormsResult,
    DirectLogitAttributionResult,
    LogitDiff,
    LogitLensResult,
    LogProb,
    Loss,
    PatchingResult,
)
from ._cache import ActivationCache, get_act_name
from ._client import Client, connect
from ._dashboard import dashboard_html, to_neuron_explainer_records, to_neuronpedia_json, write_dashboards
from ._errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    GlassboxError,
    Internal,
    InvalidArgument,
    MalformedStream,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from ._generate import GeneratedSequence, GenerationStep, GenerationStream
from ._heads import HeadDetection, copy_losses, repeated_random_tokens
from ._interventions import (
    Add,
    Intervention,
    MeanAblate,
    OrthogonalDecomp,
    PatchFromCache,
    PatchRows,
    ProjectionCap,
    ProjectOut,
    Scale,
    Set,
    Zero,
    zero_heads,
)
from ._gradients import (Direction, GradientResult, IntegratedGradientsResult, JacobianResult, Logit,
                         SaeFeature)
from ._model import Model, RunResult
from . import lre
from ._saes import FeatureEdit, SaeEncoding, SaeInfo, SaeSplice, SaeStats, SaeSteer
from ._scans import (
    ExplanationScore,
    Heads,
    JobCancelled,
    JobFailed,
    JobInfo,
    ScanJob,
    ScanLogit,
    ScanQuantile,
    ScanRecord,
    ScanStats,
    ScanTargetResult,
    ScoredExcerpt,
)
from ._stream import RunStream
from ._types import (
    CachedRun,
    Capture,
    HookDim,
    HookPoint,
    KeyUsage,
    ModelInfo,
    QueuedRequest,
    QueueStatus,
    RunHeader,
    RunSummary,
    TensorInfo,
    Timings,
)

__version__ = "0.1.0"

# Public classes show as glassbox.X (not glassbox._errors.X) in reprs and tracebacks.
for _name in ("Client", "Model", "ModelInfo", "HookPoint", "HookDim", "Capture", "RunResult",
              "RunStream", "RunHeader", "RunSummary", "TensorInfo", "Timings",
              "QueueStatus", "QueuedRequest", "KeyUsage", "ActivationCache",
              "Intervention", "Zero", "Scale", "Add", "Set", "MeanAblate", "PatchRows", "PatchFromCache", "CachedRun",
              "LogitDiff", "LogProb", "Loss", "PatchingResult", "LogitLensResult",
              "DirectLogitAttributionResult", "AttentionNormsResult", "AttentionNormsLayer",
              "HeadDetection", "SaeInfo", "SaeSplice", "SaeSteer", "FeatureEdit", "SaeEncoding", "SaeStats",
              "ScanJob", "JobInfo", "ScanTargetResult", "ScanRecord", "ScanQuantile", "ScanStats",
              "ScanLogit", "ScoredExcerpt", "ExplanationScore", "Heads", "GradientResult", "IntegratedGradientsResult", "JacobianResult", "Logit", "Direction",
              "SaeFeature"):
    globals()[_name].__module__ = __name__
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, GlassboxError):
        _cls.__module__ = __name__
del _name, _cls

__all__ = [
    "connect",
    "Client",
    "Model",
    "ModelInfo",
    "HookPoint",
    "HookDim",
    "Capture",
    "RunResult",
    "RunStream",
    "GenerationStep",
    "GenerationStream",
    "GeneratedSequence",
    "RunHeader",
    "RunSummary",
    "TensorInfo",
    "Timings",
    "QueueStatus",
    "QueuedRequest",
    "KeyUsage",
    "ActivationCache",
    "get_act_name",
    "Intervention",
    "Zero",
    "zero_heads",
    "Scale",
    "Add",
    "Set",
    "MeanAblate",
    "PatchRows",
    "PatchFromCache",
    "ProjectOut",
    "OrthogonalDecomp",
    "ProjectionCap",
    "CachedRun",
    "LogitDiff",
    "LogProb",
    "Loss",
    "PatchingResult",
    "LogitLensResult",
    "DirectLogitAttributionResult",
    "AttentionNormsResult",
    "AttentionNormsLayer",
    "HeadDetection",
    "repeated_random_tokens",
    "copy_losses",
    "SaeInfo",
    "SaeSplice",
    "SaeSteer",
    "FeatureEdit",
    "SaeEncoding",
    "SaeStats",
    "ScanJob",
    "JobInfo",
    "ScanTargetResult",
    "ScanRecord",
    "ScanQuantile",
    "ScanStats",
    "ScanLogit",
    "ScoredExcerpt",
    "ExplanationScore",
    "Heads",
    "GradientResult",
    "IntegratedGradientsResult",
    "JacobianResult",
    "Logit",
    "Direction",
    "SaeFeature",
    "lre",
    "dashboard_html",
    "write_dashboards",
    "to_neuronpedia_json",
    "to_neuron_explainer_records",
    "GlassboxError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "MalformedStream",
    "JobFailed",
    "JobCancelled",
]
