"""One wording for a refused document, wherever it is refused: the field's path, then why."""

from __future__ import annotations

import pydantic
import pytest

from sluice.resources import describe
from sluice.resources.models import UpstreamSpec


def refusal(spec: dict[str, object]) -> pydantic.ValidationError:
    with pytest.raises(pydantic.ValidationError) as raised:
        UpstreamSpec.model_validate(spec)
    return raised.value


def test_the_first_refusal_names_its_field_path() -> None:
    error = refusal(
        {"provider": "openai", "baseURL": "https://x.invalid", "models": [{"name": ""}]}
    )

    assert describe(error).startswith("models.0.name: String should have at least 1 character")


def test_a_document_under_a_path_names_the_whole_path() -> None:
    error = refusal({"provider": "fax", "baseURL": "https://x.invalid", "models": [{"name": "m"}]})

    assert describe(error, under="spec").startswith("spec.provider: Input should be ")
