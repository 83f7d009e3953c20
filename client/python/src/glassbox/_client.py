"""Client: a connection to one Glassbox server."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Union

import grpc

from ._model import Model
from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._saes import SaeInfo
from ._scans import JobInfo, ScanJob
from ._transport import Metadata, Transport, bearer_metadata, open_channel
from ._types import CachedRun, ModelInfo, QueueStatus


class Client:
    """A connection to a Glassbox server; create it with ``glassbox.connect``.

    Use it as a context manager, or call ``close()``, to release the channel.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Metadata = (),
        timeout: Optional[float] = None,
        address: str = "",
    ) -> None:
        #: The service's RPCs as typed methods over ``channel``; the client's models call it too.
        self.transport = Transport(channel, metadata, timeout)
        self.address = address

    @property
    def timeout(self) -> Optional[float]:
        """The default deadline in seconds of every call (None: no deadline); assignable."""
        return self.transport.timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        self.transport.timeout = value

    def models(self) -> List[ModelInfo]:
        """The models the server serves (``hook_points`` empty; see ``model_info``)."""
        response = self.transport.list_models(pb.ListModelsRequest())
        return [ModelInfo.from_proto(m) for m in response.models]

    def model_info(self, name: str) -> ModelInfo:
        """Full information about one model, hook points included. Unknown name: NotFound."""
        return ModelInfo.from_proto(self.transport.get_model_info(pb.GetModelInfoRequest(model=name)))

    def saes(self) -> List[SaeInfo]:
        """Every SAE the server holds, whichever model it is attached to."""
        return [SaeInfo.from_proto(s) for s in self.transport.list_saes(pb.ListSaesRequest()).saes]

    def cached_runs(self) -> List[CachedRun]:
        """The runs kept on the server (``Model.run(..., cache_as=NAME)``), by name. On a server
        with API keys they are this key's (an admin key's: every key's, by owner); budgets are
        per key (--cache_max_bytes, or the key's cache_bytes quota, and --cache_max_entries).
        Without keys all clients share one namespace and one budget."""
        response = self.transport.list_cached_runs(pb.ListCachedRunsRequest())
        return [CachedRun.from_proto(r) for r in response.runs]

    def release_cached_run(self, name: str) -> int:
        """Frees a cached run now; returns its bytes. ``glassbox.NotFound`` when it expired or
        never existed."""
        return int(self.transport.release_cached_run(pb.ReleaseCachedRunRequest(name=name)).released_bytes)

    def queue(self) -> QueueStatus:
        """What the server's device is running and has queued, and each key's usage
        (docs/service.md, "The scheduler"). On a server with API keys, admin keys only
        (``PermissionDenied`` otherwise)."""
        return QueueStatus.from_proto(self.transport.get_queue(pb.GetQueueRequest()))

    def jobs(self) -> List[JobInfo]:
        """The server's jobs (dataset scans), oldest first: this key's, or every key's for an
        admin key. Ended jobs stay listed (and, with ``--jobs_dir``, survive restarts)."""
        return [JobInfo.from_proto(j) for j in self.transport.list_jobs(pb.ListJobsRequest()).jobs]

    def job(self, job_id: str) -> ScanJob:
        """A handle on job ``job_id`` (``JobInfo.job_id``, ``ScanJob.id``), e.g. to wait for a
        scan started in another session. ``NotFound`` unless it exists and is the caller's."""
        job = ScanJob(self.transport, job_id)
        job.info()  # NotFound now rather than on first use
        return job

    def model(self, name: str) -> Model:
        """A handle on one model. Unknown name: NotFound."""
        return Model(self, self.model_info(name))

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"glassbox.Client({self.address!r})"


def connect(
    address: str,
    api_key: Optional[str] = None,
    tls: bool = False,
    root_certificates: Union[None, bytes, str, "os.PathLike[str]"] = None,
    timeout: Optional[float] = None,
    certificate_chain: Union[None, bytes, str, "os.PathLike[str]"] = None,
    private_key: Union[None, bytes, str, "os.PathLike[str]"] = None,
) -> Client:
    """Opens a connection to a Glassbox server at ``address`` ("host:port").

    Args:
        address: the server's "host:port".
        api_key: sent as ``authorization: Bearer <api_key>`` on every call.
        tls: use TLS (implied by ``root_certificates``); the system's roots verify the server
            unless ``root_certificates`` is given.
        root_certificates: PEM bytes, PEM text, or a path to a PEM file.
        timeout: default deadline in seconds for every call (None: no deadline).
        certificate_chain, private_key: the client certificate and its key (PEM, as
            ``root_certificates``; both or neither; either implies TLS), for a server started
            with ``--tls_client_ca`` (mutual TLS).

    The channel connects lazily: an unreachable server shows up as ``Unavailable`` on the
    first call.
    """
    use_tls = tls or root_certificates is not None or certificate_chain is not None or private_key is not None
    channel = open_channel(address, use_tls, root_certificates, certificate_chain, private_key)
    return Client(channel, bearer_metadata(api_key), timeout, address)
