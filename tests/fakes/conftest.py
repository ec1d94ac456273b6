from .fixtures import fake_anthropic, fake_openai  # noqa: F401 - fixtures shared with tests/e2e
