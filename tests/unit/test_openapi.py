"""The gateway's OpenAPI document gets the /v1 bodies and answers FastAPI cannot see (the
routes read their bodies themselves). vLLM's schemas are stood in by small ones here; the
end-to-end fuzz test reads the real document from a running platform."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serving.gateway import build_gateway_app
from serving.gateway import openapi as gateway_openapi

STAND_INS = {
    name: {"type": "object", "properties": {"model": {"anyOf": [{"type": "string"},
                                                                 {"type": "null"}]},
                                            "max_tokens": {"type": "integer"}},
           **({"required": ["messages"]} if name.startswith("Chat") else {})}
    for name in ("ChatCompletionRequest", "CompletionRequest", "ChatCompletionResponse",
                 "CompletionResponse", "ResponsesRequest", "ResponsesResponse",
                 "EmbeddingCompletionRequest", "EmbeddingChatRequest",
                 "EmbeddingResponse", "TokenizeCompletionRequest", "TokenizeChatRequest",
                 "TokenizeResponse", "DetokenizeRequest", "DetokenizeResponse",
                 "PoolingCompletionRequest", "PoolingChatRequest", "PoolingResponse",
                 *gateway_openapi.SCORE_REQUESTS, "ScoreResponse", "RerankRequest",
                 "RerankResponse")
}


def test_document_declares_bodies_responses_and_auth(monkeypatch):
    monkeypatch.setattr(gateway_openapi, "vllm_schemas", lambda: STAND_INS)
    app = build_gateway_app({}, access=None)
    document = TestClient(app).get("/openapi.json").json()

    schemas = document["components"]["schemas"]
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"}
    assert schemas["ChatCompletionRequest"]["required"] == ["messages", "model"]
    assert schemas["CompletionRequest"]["required"] == ["model"]
    assert schemas["CompletionRequest"]["properties"]["model"]["type"] == "string"
    assert schemas["CompletionRequest"]["additionalProperties"] is False
    assert set(chat["responses"]) == {"200", "400", "401", "403", "404", "413", "429", "503"}
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "retry-after" in chat["responses"]["503"]["headers"]
    assert chat["security"] == [{"bearer": []}]
    assert document["paths"]["/v1/models"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"] == {"$ref": "#/components/schemas/ModelList"}
    tokenize = document["paths"]["/tokenize"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert tokenize == {"oneOf": [{"$ref": "#/components/schemas/TokenizeCompletionRequest"},
                                  {"$ref": "#/components/schemas/TokenizeChatRequest"}]}
    assert schemas["DetokenizeRequest"]["required"] == ["model"]
    one = document["paths"]["/v1/models/{model}"]["get"]["responses"]
    assert set(one) == {"200", "401", "403", "404", "503"}
    # vLLM's pooling routes, at each path `vllm serve` has them.
    score = [{"$ref": f"#/components/schemas/{name}"} for name in gateway_openapi.SCORE_REQUESTS]
    for path in ("/score", "/v1/score"):
        assert document["paths"][path]["post"]["requestBody"]["content"]["application/json"][
            "schema"] == {"oneOf": score}
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        rerank = document["paths"][path]["post"]
        assert rerank["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/RerankResponse"}
        assert rerank["security"] == [{"bearer": []}]
    # The stand-ins were not changed in place: the document holds its own copies.
    assert "additionalProperties" not in STAND_INS["CompletionRequest"]
