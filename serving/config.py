"""The only reader of the environment: `from_env(environ)` returns the frozen configuration of every process."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from serving.messages import AdapterSpec

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
QUANTIZE_SUPPORTED: tuple[str, ...] = ()
QUANTIZE_OFF = ("false", "none", "no", "0")  # `json.dumps(False)` from 2023 SageMaker examples means "off"
# TGI settings that change what the model computes or loads and that this server cannot honour: any value stops
# start-up with one line rather than serving something other than what was asked for.
UNSUPPORTED_SETTINGS = ("ROPE_SCALING", "ROPE_FACTOR", "KV_CACHE_DTYPE", "TOKENIZER_CONFIG_PATH")
# Settings of TGI, of its SageMaker image and of the SDK that have no effect here: accepted whatever their value,
# and named in the start-up log when set.
IGNORED_SETTINGS = (
    "MESSAGES_API_ENABLED", "HF_TASK", "SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY",
    "SAGEMAKER_CONTAINER_LOG_LEVEL", "SAGEMAKER_REGION", "SAGEMAKER_SAFE_PORT_RANGE", "SAGEMAKER_MODEL_SERVER_TIMEOUT",
    "SPECULATE", "CUDA_GRAPHS", "MAX_WAITING_TOKENS", "WAITING_SERVED_RATIO", "VALIDATION_WORKERS",
    "DISABLE_CUSTOM_KERNELS", "WEIGHTS_CACHE_OVERRIDE", "USAGE_STATS", "PREFILL_CHUNKING",
    "ATTENTION", "USE_FLASH_ATTENTION", "SHARD_UDS_PATH", "MASTER_ADDR", "MASTER_PORT", "HF_HUB_ENABLE_HF_TRANSFER",
)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad environment value; the message names the variable and what it accepts."""


@dataclass(frozen=True)
class EngineConfig:
    """What the engine process needs: the model, the device placement and the scheduler's budgets."""

    model_id: str
    revision: str | None
    hf_token: str | None = field(repr=False)
    trust_remote_code: bool
    num_gpus: int | None
    dtype: str | None
    max_input_tokens: int | None
    max_total_tokens: int | None
    max_batch_prefill_tokens: int | None
    max_batch_total_tokens: int | None
    max_batch_size: int | None
    max_concurrent_requests: int
    torch_threads: int | None
    engine_address: str
    log_level: str
    model_source: str = "HF_MODEL_ID"
    cache_dir: str | None = None
    memory_fraction: float = 1.0
    heartbeat_path: str | None = None  # touched by the engine loop every turn; the launcher watches it
    fault_marker: str | None = None  # tests only: a step with a prompt containing it raises
    packed_linear: bool = True  # CPU linear layers on oneDNN with prepacked weights (`engine/packed_linear.py`)
    lean_forward: bool = True  # Llama-family models run `engine/lean_forward.py` instead of transformers' forward
    decode_kernel: bool = True  # CPU decode attention reads the paged blocks in place (`engine/cpu_kernels.py`)
    prefix_caching: bool = True  # KV cache blocks of prompts are kept and shared by later prompts (PREFIX_CACHING)
    replicas: int = 1  # engine processes, each with its own copy of the model (ENGINE_REPLICAS)
    replica: int = 0  # which of them this process is (set by the launcher for each)
    lora_adapters: tuple[AdapterSpec, ...] = ()  # registered at start (LORA_ADAPTERS)
    max_lora_adapters: int = 8  # LoRA adapters resident in memory at once (MAX_LORA_ADAPTERS)
    max_lora_rank: int = 64  # the largest LoRA rank accepted (MAX_LORA_RANK)


@dataclass(frozen=True)
class ServerConfig:
    """What the launcher and the HTTP workers need."""

    host: str
    port: int
    workers: int
    shutdown_grace_seconds: float
    engine_start_timeout: float
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_client_batch_size: int
    payload_limit: int
    compute_type: str
    engine_address: str
    log_level: str
    api_key: str | None = field(default=None, repr=False)
    cors_allow_origins: tuple[str, ...] = ()
    metrics_dir: str | None = None
    engine_stall_timeout: float = 120.0
    drain_path: str | None = None  # created by the launcher on SIGTERM: the HTTP workers refuse new requests
    engine_down_path: str | None = None  # created by the launcher when an engine died or froze: requests fail
    engine_replicas: int = 1
    grammar_max_bytes: int = 100_000  # the largest `grammar`, `response_format` schema or tool list accepted
    request_read_timeout: float = 60.0  # a request's body must arrive within this many seconds of its head
    max_connections: int = 4096  # connections each HTTP worker holds open at once (gunicorn's worker_connections)

    @property
    def engine_addresses(self) -> tuple[str, ...]:
        """The socket of each engine replica."""
        return tuple(for_replica(self.engine_address, r) for r in range(self.engine_replicas))


@dataclass(frozen=True)
class Config:
    """The whole configuration, read once."""

    server: ServerConfig
    engine: EngineConfig
    ignored: tuple[str, ...] = ()


class _Env:
    """Typed access to an environment mapping where an empty string counts as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, *names: str) -> tuple[str, str] | None:
        """The first of `names` that is set to a non-empty value, with that value."""
        for name in names:
            value = self._environ.get(name, "").strip()
            if value:
                return name, value
        return None

    def str(self, *names: str, default: str | None = None) -> str | None:
        """A string value, or `default`."""
        found = self.raw(*names)
        return found[1] if found else default

    def parse(self, names: tuple[str, ...], convert: Callable[[str], T], accepts: str, default: T) -> T:
        """Convert the first set variable of `names`, or fail naming the variable and what it accepts."""
        found = self.raw(*names)
        if found is None:
            return default
        name, value = found
        try:
            return convert(value)
        except (ValueError, TypeError):
            raise ConfigError(f"{name}={value!r} is not valid: {name} accepts {accepts}") from None

    def int(self, *names: str, default: int | None = None, minimum: int = 1) -> int | None:
        """An integer at least `minimum`, or `default`."""

        def convert(value: str) -> int:
            number = int(value)
            if number < minimum:
                raise ValueError(value)
            return number

        return self.parse(names, convert, f"an integer >= {minimum}", default)

    def float(self, *names: str, default: float, minimum: float = 0.0, maximum: float | None = None) -> float:
        """A float at least `minimum` (and at most `maximum`), or `default`."""

        def convert(value: str) -> float:
            number = float(value)
            if not number >= minimum or (maximum is not None and number > maximum):
                raise ValueError(value)
            return number

        accepts = f"a number >= {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        return self.parse(names, convert, accepts, default)

    def bool(self, *names: str, default: bool = False) -> bool:
        """A boolean spelled true/false, 1/0, yes/no or on/off."""

        def convert(value: str) -> bool:
            lowered = value.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)

        return self.parse(names, convert, "true or false", default)

    def choice(self, names: tuple[str, ...], choices: tuple[str, ...], aliases: Mapping[str, str] | None = None,
               default: str | None = None) -> str | None:
        """One of `choices` (case-insensitive, with optional aliases), or `default`."""
        aliases = aliases or {}

        def convert(value: str) -> str:
            lowered = value.lower()
            lowered = aliases.get(lowered, lowered)
            if lowered not in choices:
                raise ValueError(value)
            return lowered

        return self.parse(names, convert, "one of " + ", ".join(choices), default)


def _model_id(env: _Env) -> tuple[str, str]:
    """The model and where it was named: HF_MODEL_ID (or TGI's MODEL_ID); else a model in /opt/ml/model (where
    SageMaker unpacks `model_data`); else the embedded default model, so that a bare `docker run IMAGE serve`
    answers. SERVING_MODEL_DIR stands in for /opt/ml/model when the server runs outside a container (tests)."""
    found = env.raw("HF_MODEL_ID", "MODEL_ID")
    if found:
        return found[1], found[0]
    model_dir = Path(env.str("SERVING_MODEL_DIR") or SAGEMAKER_MODEL_DIR)
    if (model_dir / "config.json").is_file():
        return str(model_dir), str(SAGEMAKER_MODEL_DIR)
    if model_dir.is_dir() and any(not entry.name.startswith(".") for entry in model_dir.iterdir()):
        raise ConfigError(f"HF_MODEL_ID is not set and {SAGEMAKER_MODEL_DIR} holds files but no config.json: "
                          f"HF_MODEL_ID accepts a hub id or a model directory such as {SAGEMAKER_MODEL_DIR}/<name>")
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return str(DEFAULT_MODEL_DIR), "embedded default model"
    raise ConfigError(f"HF_MODEL_ID is not set and {SAGEMAKER_MODEL_DIR} holds no model: HF_MODEL_ID accepts a hub "
                      "id or a local model directory")


def _host(env: _Env) -> str:
    """TGI's rule: HOSTNAME when it is an IP address (in Docker it is the container id), else 0.0.0.0."""
    value = env.str("HOSTNAME", default="0.0.0.0") or "0.0.0.0"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "0.0.0.0"
    return value


def _origins(env: _Env) -> tuple[str, ...]:
    """CORS_ALLOW_ORIGIN: the allowed origins, comma-separated; none means any origin (`*`), as in TGI."""
    value = env.str("CORS_ALLOW_ORIGIN") or ""
    return tuple(origin.strip() for origin in value.split(",") if origin.strip())


def _limits(env: _Env) -> tuple[int | None, int | None]:
    """MAX_INPUT_TOKENS (alias MAX_INPUT_LENGTH, not both) and MAX_TOTAL_TOKENS, checked against each other."""
    if env.raw("MAX_INPUT_TOKENS") and env.raw("MAX_INPUT_LENGTH"):
        raise ConfigError("MAX_INPUT_TOKENS and MAX_INPUT_LENGTH are both set: set only MAX_INPUT_TOKENS")
    max_input = env.int("MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH")
    max_total = env.int("MAX_TOTAL_TOKENS", minimum=2)
    if max_input is not None and max_total is not None and max_input >= max_total:
        raise ConfigError(f"MAX_INPUT_TOKENS={max_input} must be < MAX_TOTAL_TOKENS={max_total}")
    return max_input, max_total


def _quantize(env: _Env) -> None:
    """No quantization backend is built in yet: any value but an "off" spelling stops start-up with a clear line."""
    found = env.raw("HF_MODEL_QUANTIZE", "QUANTIZE")
    if found and found[1].lower() not in QUANTIZE_OFF:
        name, value = found
        supported = ", ".join(QUANTIZE_SUPPORTED) or "nothing yet (leave it unset)"
        raise ConfigError(f"{name}={value!r} is not supported: {name} accepts {supported}")


def _unsupported(env: _Env) -> None:
    """TGI settings this server cannot honour stop start-up when set."""
    for name in UNSUPPORTED_SETTINGS:
        found = env.raw(name)
        if found:
            raise ConfigError(f"{name}={found[1]!r} is not supported by this server: leave {name} unset")


def _num_gpus(env: _Env) -> int | None:
    """SM_NUM_GPUS (TGI: NUM_SHARD), checked against TGI's SHARDED like TGI's launcher does."""
    num_gpus = env.int("SM_NUM_GPUS", "NUM_SHARD")
    sharded = env.bool("SHARDED") if env.raw("SHARDED") else None
    if sharded is False:
        if num_gpus is not None and num_gpus > 1:
            raise ConfigError(f"SHARDED=false but SM_NUM_GPUS/NUM_SHARD={num_gpus}: set one of them only")
        return 1
    if sharded is True and num_gpus == 1:
        raise ConfigError("SHARDED=true but SM_NUM_GPUS/NUM_SHARD=1: set one of them only")
    return num_gpus


def _lora_adapters(env: _Env) -> tuple[AdapterSpec, ...]:
    """LORA_ADAPTERS in TGI's format: comma-separated `owner/name`, `owner/name@revision` or `name=source` (a local
    directory or a hub id); a hub id's adapter is named by the id without its revision."""
    found = env.raw("LORA_ADAPTERS")
    if not found:
        return ()
    specs: list[AdapterSpec] = []
    for item in (part.strip() for part in found[1].split(",")):
        if not item:
            continue
        name, sep, source = item.partition("=")
        if not sep:
            name, source = item.partition("@")[0], item
        name, source = name.strip(), source.strip()
        if not name or not source:
            raise ConfigError(f"LORA_ADAPTERS entry {item!r} is not valid: LORA_ADAPTERS accepts comma-separated "
                              "owner/name, owner/name@revision or name=/local/dir")
        if any(spec.name == name for spec in specs):
            raise ConfigError(f"LORA_ADAPTERS names the adapter {name!r} twice")
        specs.append(AdapterSpec(name=name, source=source))
    return tuple(specs)


def for_replica(address: str, replica: int) -> str:
    """Engine replica `replica`'s socket or file: the configured one for replica 0, else a path (ipc or file) with
    the replica's number appended, or a tcp port that many above the configured one."""
    if replica == 0:
        return address
    if address.startswith("tcp://"):
        host, _, port = address.rpartition(":")
        return f"{host}:{int(port) + replica}"
    return f"{address}.{replica}"


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    """Read and check every setting; raises `ConfigError` with one line naming the variable."""
    env = _Env(os.environ if environ is None else environ)
    _quantize(env)
    _unsupported(env)
    model_id, model_source = _model_id(env)
    port = env.int("SAGEMAKER_BIND_TO_PORT", "PORT", default=8080, minimum=1)
    if port > 65535:
        raise ConfigError(f"port {port} is not valid: SAGEMAKER_BIND_TO_PORT and PORT accept 1 to 65535")
    log_level = env.choice(("LOG_LEVEL",), LOG_LEVELS, {"warn": "warning"}, default="info")
    engine_address = env.str("SERVING_ENGINE_ADDRESS") or (
        f"ipc://{tempfile.gettempdir()}/serving-engine-{os.getpid()}-{port}.sock")
    max_input, max_total = _limits(env)
    replicas = env.int("ENGINE_REPLICAS", default=1, minimum=1)
    replica = env.int("SERVING_ENGINE_REPLICA", default=0, minimum=0)
    if replica >= replicas:
        raise ConfigError(f"SERVING_ENGINE_REPLICA={replica} is not below ENGINE_REPLICAS={replicas}")
    max_concurrent = env.int("MAX_CONCURRENT_REQUESTS", default=128)
    heartbeat = env.str("SERVING_ENGINE_HEARTBEAT")
    adapters = _lora_adapters(env)
    engine = EngineConfig(
        model_id=model_id,
        revision=env.str("HF_MODEL_REVISION", "REVISION"),
        hf_token=env.str("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN"),
        trust_remote_code=env.bool("HF_MODEL_TRUST_REMOTE_CODE", "TRUST_REMOTE_CODE"),
        num_gpus=_num_gpus(env),
        dtype=env.choice(("DTYPE",), DTYPES, DTYPE_ALIASES),
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_prefill_tokens=env.int("MAX_BATCH_PREFILL_TOKENS"),
        max_batch_total_tokens=env.int("MAX_BATCH_TOTAL_TOKENS"),
        max_batch_size=env.int("MAX_BATCH_SIZE"),
        max_concurrent_requests=-(-max_concurrent // replicas),  # each replica's share, rounded up
        torch_threads=env.int("TORCH_NUM_THREADS"),
        engine_address=for_replica(engine_address, replica),
        log_level=log_level,
        model_source=model_source,
        cache_dir=env.str("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"),
        memory_fraction=env.float("CUDA_MEMORY_FRACTION", default=1.0, minimum=0.01, maximum=1.0),
        heartbeat_path=for_replica(heartbeat, replica) if heartbeat else None,
        fault_marker=env.str("SERVING_FAULT_INJECTION"),
        packed_linear=env.bool("CPU_PACKED_LINEAR", default=True),
        lean_forward=env.bool("LEAN_FORWARD", default=True),
        decode_kernel=env.bool("CPU_DECODE_KERNEL", default=True),
        prefix_caching=env.bool("PREFIX_CACHING", default=True),
        replicas=replicas,
        replica=replica,
        lora_adapters=adapters,
        max_lora_adapters=env.int("MAX_LORA_ADAPTERS", default=max(8, len(adapters))),
        max_lora_rank=env.int("MAX_LORA_RANK", default=64),
    )
    server = ServerConfig(
        host=_host(env),
        port=port,
        workers=env.int("SAGEMAKER_MODEL_SERVER_WORKERS", default=1),
        shutdown_grace_seconds=env.float("SHUTDOWN_GRACE_SECONDS", "GRACEFUL_TERMINATION_TIMEOUT", default=30.0),
        engine_start_timeout=env.float("ENGINE_START_TIMEOUT", default=3600.0, minimum=1.0),
        max_best_of=env.int("MAX_BEST_OF", default=2),
        max_stop_sequences=env.int("MAX_STOP_SEQUENCES", default=4, minimum=0),
        max_top_n_tokens=env.int("MAX_TOP_N_TOKENS", default=5, minimum=0),
        max_client_batch_size=env.int("MAX_CLIENT_BATCH_SIZE", default=4),
        payload_limit=env.int("PAYLOAD_LIMIT", default=2_000_000),
        compute_type=env.str("COMPUTE_TYPE", default="gpu+optimized") or "gpu+optimized",
        engine_address=engine_address,
        log_level=log_level,
        api_key=env.str("API_KEY"),
        cors_allow_origins=_origins(env),
        metrics_dir=env.str("PROMETHEUS_MULTIPROC_DIR"),
        engine_stall_timeout=env.float("ENGINE_STALL_TIMEOUT", default=120.0, minimum=0.1),
        drain_path=env.str("SERVING_DRAIN_FILE"),
        engine_down_path=env.str("SERVING_ENGINE_DOWN_FILE"),
        engine_replicas=replicas,
        grammar_max_bytes=env.int("GRAMMAR_MAX_BYTES", default=100_000),
        request_read_timeout=env.float("REQUEST_READ_TIMEOUT", default=60.0, minimum=0.1),
        max_connections=env.int("MAX_CONNECTIONS", default=4096),
    )
    ignored = tuple(name for name in IGNORED_SETTINGS if env.raw(name))
    return Config(server=server, engine=engine, ignored=ignored)
