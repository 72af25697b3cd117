"""LoRA adapters on the wire: which adapter a request runs with, and the bodies that register and unregister them.

The rule for OpenAI's `model` field (README, "LoRA adapters"): absent (or empty), `tgi`, the model's id (HF_MODEL_ID or its
directory) and the directory's last name mean the base model; any other name is sent as an optional adapter, which
the engine runs on the base model while no adapter is registered at all (clients send whatever model name they were
configured with) and otherwise refuses with ADAPTER_NOT_FOUND when no adapter has that name. TGI's `adapter_id`
and SageMaker's adapter header are strict: an unknown name is always refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Mapping, Self

import msgspec.structs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.api.catalogue import Error
from serving.api.errors import ApiError
from serving.messages import AdapterInfo, AdapterSpec, GenerateRequest

TGI_MODEL = "tgi"  # what TGI's own clients send as `model`
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
Text = Annotated[str, Field(pattern=r"\S")]  # a name or source: not empty, not only blanks


@dataclass(frozen=True)
class AdapterChoice:
    """The adapter a request's generations run with: `name` None is the base model; an `optional` name (from
    OpenAI's `model`) means the base model while the engine has no adapter registered."""

    name: str | None = None
    optional: bool = False

    def apply(self, requests: list[GenerateRequest]) -> list[GenerateRequest]:
        """The engine requests, naming this adapter."""
        if self.name is None:
            return requests
        return [msgspec.structs.replace(request, adapter=self.name, adapter_optional=self.optional)
                for request in requests]


def base_model_names(model_id: str) -> frozenset[str]:
    """The `model` values that mean the base model: `tgi`, the model's id, and a directory's last name."""
    names = {TGI_MODEL, model_id}
    if model_id.startswith("/"):
        names.add(PurePosixPath(model_id).name)
    return frozenset(names)


def by_model(model: str | None, model_id: str) -> AdapterChoice:
    """The adapter OpenAI's `model` field chooses (see the module's rule)."""
    if not model or model in base_model_names(model_id):
        return AdapterChoice()
    return AdapterChoice(model, optional=True)


def by_adapter_id(adapter_id: str | None) -> AdapterChoice:
    """The adapter TGI's `parameters.adapter_id` chooses: strictly that one (absent or empty: the base model)."""
    return AdapterChoice(adapter_id) if adapter_id else AdapterChoice()


class _AdapterBody(BaseModel):
    """A body of the adapter routes: unknown fields ignored, a missing or malformed one a 400."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def of(cls, data: Any) -> Self:
        """Validate a JSON body (or `POST /adapters`' query parameters); a 400 naming the first field at fault."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "body"
            problem = "must not be blank" if error["type"] == "string_pattern_mismatch" else error["msg"]
            raise ApiError(Error.ADAPTER_BAD_REQUEST, f"Invalid adapter request: `{field}`: {problem}") from None


class RegisterAdapterBody(_AdapterBody):
    """SageMaker's `POST /adapters`: the adapter's name, its source (a local directory or a hub id), whether to load
    it now, and whether to keep it in memory for good."""

    name: Text
    src: Text
    preload: bool = True
    pin: bool = False

    def spec(self, model_id: str) -> AdapterSpec:
        """The engine's registration, refusing a name that the `model` field would read as the base model."""
        return adapter_spec(self.name, self.src, model_id, preload=self.preload, pinned=self.pin)


class LoadLoraAdapterBody(_AdapterBody):
    """vLLM's `POST /v1/load_lora_adapter`."""

    lora_name: Text
    lora_path: Text


class UnloadLoraAdapterBody(_AdapterBody):
    """vLLM's `POST /v1/unload_lora_adapter`."""

    lora_name: Text


def query_fields(args: Mapping[str, str]) -> dict[str, Any]:
    """The query parameters of `POST /adapters` with a non-JSON body, booleans read from their words."""
    fields: dict[str, Any] = {key: args[key] for key in ("name", "src") if key in args}
    for key in ("preload", "pin"):
        if key in args:
            word = args[key].strip().lower()
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise ApiError(Error.ADAPTER_BAD_REQUEST, f"Invalid adapter request: `{key}` must be true or false")
            fields[key] = word in TRUE_WORDS
    return fields


def adapter_spec(name: str, source: str, model_id: str, preload: bool = True, pinned: bool = False) -> AdapterSpec:
    """The engine's registration of `name` (blanks around it and `source` dropped); a name meaning the base model
    is a 400."""
    name, source = name.strip(), source.strip()
    if name in base_model_names(model_id):
        raise ApiError(Error.ADAPTER_BAD_REQUEST, f"Invalid adapter request: `{name}` names the base model")
    return AdapterSpec(name=name, source=source, preload=preload, pinned=pinned)


def adapter_json(adapter: AdapterInfo) -> dict[str, Any]:
    """One registered adapter as `/info` and `GET /adapters` show it."""
    return {"name": adapter.name, "src": adapter.source, "rank": adapter.rank,
            "target_modules": list(adapter.target_modules), "pinned": adapter.pinned, "resident": adapter.resident}
