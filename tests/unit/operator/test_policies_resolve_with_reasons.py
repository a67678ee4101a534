"""The book of BreakerPolicies keeps why a policy cannot be used, naming the field."""

from __future__ import annotations

from sluice.operator.worker import PolicyBook


def test_a_valid_policy_is_kept_as_the_core_policy() -> None:
    book = PolicyBook()

    book.put("ns", "fast", {"consecutiveFailures": 3, "openDuration": "2s"})

    entry = book.get("ns", "fast")
    assert entry is not None
    assert entry.policy is not None
    assert entry.policy.open_duration == 2.0


def test_a_policy_only_the_core_can_refuse_carries_the_reason() -> None:
    book = PolicyBook()

    book.put("ns", "bad", {"failureStatuses": ["4xx"]})  # includes 429

    entry = book.get("ns", "bad")
    assert entry is not None
    assert entry.policy is None
    assert entry.error is not None
    assert entry.error.startswith("failureStatuses: [429] also listed as rate-limit statuses")


def test_a_malformed_policy_names_the_field() -> None:
    book = PolicyBook()

    book.put("ns", "bad", {"openDuration": "soon"})

    entry = book.get("ns", "bad")
    assert entry is not None
    assert entry.error is not None
    assert entry.error.startswith("openDuration: ")


def test_policies_are_per_namespace() -> None:
    book = PolicyBook()
    book.put("a", "p", {})

    assert book.get("b", "p") is None
    book.remove("a", "p")
    assert book.get("a", "p") is None
