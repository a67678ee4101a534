"""The rest of the API: models, completions, embeddings, metrics, and the admin endpoints."""

from __future__ import annotations

from tests.component.conftest import Gateway, MakeGateway


async def test_models_lists_the_configured_names(gateway: Gateway) -> None:
    models = await gateway.openai.models.list()

    assert [m.id for m in models.data] == ["m1"]


async def test_embeddings_and_completions_pass_through(gateway: Gateway) -> None:
    embedding = await gateway.openai.embeddings.create(model="m1", input=["a", "b"])
    completion = await gateway.openai.completions.create(model="m1", prompt="hi")

    assert len(embedding.data) == 2
    assert completion.choices[0].text == "hello from primary"


async def test_metrics_count_requests_attempts_failovers_and_tokens(gateway: Gateway) -> None:
    gateway.fakes["primary"].default_status = 503
    await gateway.chat()

    text = await (await gateway.client.get("/metrics")).text()

    assert 'sluice_requests_total{code="200",route="default/m1"} 1.0' in text
    assert (
        'sluice_attempts_total{namespace="default",outcome="failure",upstream="primary"} 1.0'
        in text
    )
    assert 'sluice_failovers_total{route="default/m1"} 1.0' in text
    assert (
        'sluice_tokens_total{kind="output",model="m1",namespace="default",upstream="secondary"} 4.0'
        in text
    )
    assert (
        'sluice_breaker_state{component="proxy",namespace="default",state="Closed",upstream="primary"} 1.0'
        in text
    )


async def test_admin_endpoints_refuse_without_the_token(gateway: Gateway) -> None:
    anonymous = await gateway.client.get("/admin/breakers")
    wrong = await gateway.client.post(
        "/admin/breakers/default/primary/open", headers={"Authorization": "Bearer nope"}
    )

    assert anonymous.status == 401
    assert wrong.status == 401
    assert gateway.proxy.breakers.get(("default", "primary")).forced is None


async def test_admin_endpoints_are_off_without_a_configured_token(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(admin_token=None)

    response = await gateway.client.get("/admin/breakers", headers={"Authorization": "Bearer "})

    assert response.status == 403


async def test_admin_can_force_a_breaker_and_list_them(gateway: Gateway) -> None:
    auth = {"Authorization": "Bearer admin-secret"}

    forced = await gateway.client.post("/admin/breakers/default/primary/open", headers=auth)
    listed = await (await gateway.client.get("/admin/breakers", headers=auth)).json()
    served = await gateway.chat()

    assert forced.status == 200
    assert (await forced.json())["effective"] == "Open"
    assert [(b["name"], b["effective"]) for b in listed["breakers"]] == [
        ("primary", "Open"),
        ("secondary", "Closed"),
    ]
    assert served.headers["x-sluice-upstream"] == "secondary"
    unknown = await gateway.client.post("/admin/breakers/default/nope/open", headers=auth)
    bad = await gateway.client.post("/admin/breakers/default/primary/explode", headers=auth)
    assert unknown.status == 404
    assert bad.status == 400


async def test_a_sticky_session_keeps_a_client_on_one_upstream(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(
        route={"strategy": "RoundRobin", "stickySession": {"header": "x-session", "ttl": "1m"}}
    )

    pinned = {
        (await gateway.chat(headers={"x-session": "s1"})).headers["x-sluice-upstream"]
        for _ in range(4)
    }
    rotating = [(await gateway.chat()).headers["x-sluice-upstream"] for _ in range(4)]

    assert len(pinned) == 1
    assert set(rotating) == {"primary", "secondary"}
