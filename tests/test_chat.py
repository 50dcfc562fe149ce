"""Chat: the model's own template in a sandbox, the context window, trimming, the prefix cache
and the `smolgen chat` terminal."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

import smolgen
from smolgen.chat import ChatTemplate, chat_prompt_ids, continued_prompt, normalize_messages

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_the_models_template_gives_chatml_with_its_default_system_line(smollm2):
    prompt = smolgen.chat.chat_template(smollm2).render([{"role": "user", "content": "Hi"}])
    assert prompt == (
        f"<|im_start|>system\n{SMOLLM_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = chat_prompt_ids(smollm2, [{"role": "user", "content": "Hi"}])
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|>, <|im_end|>


def test_roles_and_content_parts_are_normalized():
    messages = normalize_messages(
        [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ]
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ab"},
    ]


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "at least one message"),
        ("hello", "must be a list"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "only text"),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "text must be a string"),
    ],
)
def test_bad_messages_are_invalid_argument_errors(messages, fragment):
    with pytest.raises(smolgen.InvalidArgumentError, match=fragment):
        normalize_messages(messages)


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ messages.append({'role': 'user'}) }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ 'a' * 10**9 }}",
        "{{ [0] * 10**9 }}",
        "{{ 7 ** 100000000 }}",
        "{% for i in range(10**9) %}{% endfor %}",
        "{% for m in messages %}",
        "{{ 1 / 0 }}",
    ],
)
def test_a_template_that_does_more_than_format_fails_safely(source):
    """Sandbox escapes, writes to the messages, huge outputs, broken syntax: all a typed
    ChatTemplateError, quickly, with nothing executed."""
    with pytest.raises(smolgen.ChatTemplateError):
        ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_a_template_may_refuse_messages_on_purpose():
    template = ChatTemplate("{{ raise_exception('Conversation roles must alternate') }}")
    with pytest.raises(smolgen.InvalidArgumentError, match="must alternate"):
        template.render([{"role": "user", "content": "x"}])


def test_templates_render_as_hugging_face_does():
    """trim_blocks/lstrip_blocks, loop controls, tojson and the bos/eos variables."""
    source = (
        "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role == 'system' %}{% continue %}"
        "{% endif %}\n{{ m.role }}: {{ m.content | tojson }}{{ eos_token }}\n{% endfor %}"
    )
    out = ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(
        [{"role": "system", "content": "s"}, {"role": "user", "content": 'say "é"'}]
    )
    # A newline after a block tag goes (trim_blocks), one after an expression stays.
    assert out == '<s>\nuser: "say \\"é\\""</s>\n'


def test_chat_answers_through_the_template(smollm2):
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    reply = smollm2.chat(messages, temperature=0, max_tokens=12, prefix_cache=False)
    direct = smollm2.generate(
        chat_prompt_ids(smollm2, messages), temperature=0, max_tokens=12, prefix_cache=False
    )
    assert reply.text == direct.text and reply.text
    assert reply.usage.prompt_tokens == len(chat_prompt_ids(smollm2, messages))
    stream = smollm2.chat(messages, temperature=0, max_tokens=12, stream=True)
    assert "".join(chunk.text for chunk in stream) == reply.text


def test_a_final_assistant_message_is_continued(smollm2):
    """A prefill: the prompt stops right after the assistant's words (no end of turn), and the
    reply is what comes after them."""
    start = "The capital of France is"
    messages = [{"role": "user", "content": "Tell me about Paris."}]
    messages.append({"role": "assistant", "content": start})
    prompt = continued_prompt(smolgen.chat.chat_template(smollm2), messages)
    opened = smolgen.chat.chat_template(smollm2).render(messages[:1])
    assert prompt == opened + start
    ids = chat_prompt_ids(smollm2, messages, continue_final_message=True)
    assert ids == smollm2.tokenize(prompt, special=True) and ids[-1] != 2  # no <|im_end|>
    reply = smollm2.chat(messages, continue_final_message=True, temperature=0, max_tokens=8)
    assert reply.text == smollm2.generate(ids, temperature=0, max_tokens=8).text
    assert reply.usage.prompt_tokens == len(ids)
    # Without the flag the assistant's message is a finished turn and a new one opens.
    assert smollm2.chat_prompt(messages)[-3:] != ids[-3:]
    # An empty final message is a plain reply to the ones before it.
    empty = [*messages[:1], {"role": "assistant", "content": ""}]
    assert chat_prompt_ids(smollm2, empty, continue_final_message=True) == chat_prompt_ids(
        smollm2, messages[:1]
    )


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "user", "content": "Hi"}], "only an assistant message"),
        ([{"role": "assistant", "content": ""}], "nothing to reply to"),
    ],
)
def test_only_an_assistant_message_can_be_continued(messages, fragment):
    template = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}")
    with pytest.raises(smolgen.InvalidArgumentError, match=fragment):
        continued_prompt(template, messages)


def test_a_template_that_rewrites_the_final_message_cannot_continue_it():
    template = ChatTemplate("{% for m in messages %}{{ m.content | upper }}{% endfor %}")
    with pytest.raises(smolgen.ChatTemplateError, match="cannot continue"):
        continued_prompt(template, [{"role": "assistant", "content": "lower case"}])


def test_the_context_window_is_enforced_in_the_words_users_know(smollm2):
    window = smollm2.context_length
    long = [{"role": "user", "content": "word " * window}]
    with pytest.raises(smolgen.ContextLengthExceededError) as e:
        smollm2.chat(long)
    assert f"maximum context length is {window} tokens" in str(e.value)
    assert "your messages resulted in" in str(e.value)
    assert e.value.prompt_tokens > window and e.value.max_context == window

    short = [{"role": "user", "content": "Hi"}]
    prompt = len(chat_prompt_ids(smollm2, short))
    with pytest.raises(smolgen.ContextLengthExceededError) as e:
        smollm2.chat(short, max_tokens=window)
    assert f"you requested {prompt + window} tokens ({prompt} in the messages" in str(e.value)
    assert (e.value.prompt_tokens, e.value.max_tokens) == (prompt, window)


def test_trim_keeps_the_system_message_and_the_newest_turns_that_fit(smollm2):
    system = {"role": "system", "content": "You answer in one word."}
    turns = []
    for i in range(12):
        turns.append({"role": "user", "content": f"Question {i}: " + "tell me more " * 20})
        turns.append({"role": "assistant", "content": f"Answer {i}: " + "more " * 20})
    turns.append({"role": "user", "content": "Last question?"})
    messages = [system, *turns]
    full = len(chat_prompt_ids(smollm2, messages))
    window = full // 2
    trimmed = smolgen.trim_messages(messages, smollm2, max_tokens=50, context_length=window)
    kept = trimmed.messages
    assert kept[0] == system and kept[-1] == turns[-1]
    assert kept[1]["role"] == "user"
    assert kept[1:] == turns[len(turns) - len(kept) + 1 :]  # a suffix: the newest turns
    assert trimmed.dropped == len(messages) - len(kept) > 0
    assert trimmed.prompt_tokens == len(chat_prompt_ids(smollm2, kept))
    assert trimmed.prompt_tokens + 50 <= window == trimmed.budget + 50
    # One more turn would not have fit.
    longer = [system, *turns[len(turns) - len(kept) - 1 :]]
    assert len(chat_prompt_ids(smollm2, longer)) > trimmed.budget
    # Everything fits: nothing dropped.
    assert smolgen.trim_messages(messages, smollm2, max_tokens=50).dropped == 0
    with pytest.raises(smolgen.ContextLengthExceededError):
        smolgen.trim_messages(messages, smollm2, max_tokens=50, context_length=60)


def test_the_prefix_cache_changes_nothing_but_the_time(smollm2):
    """The same greedy tokens and log-probabilities with and without the cache, and the second
    request prefills only what follows the shared system prompt."""
    smollm2.configure_prefix_cache(clear=True)
    system = {"role": "system", "content": "You are a geography teacher. " * 40}
    first = [system, {"role": "user", "content": "Name a river."}]
    second = [system, {"role": "user", "content": "Name a mountain."}]
    settings = {"temperature": 0, "max_tokens": 16, "logprobs": 3}
    cold = [smollm2.chat(m, prefix_cache=False, **settings) for m in (first, second)]
    smollm2.chat(first, **settings)
    warm = smollm2.chat(second, **settings)
    assert warm.usage.cached_tokens > 200
    assert warm.token_ids == cold[1].token_ids
    for a, b in zip(warm.logprobs, cold[1].logprobs, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert [t.id for t in a.top_logprobs] == [t.id for t in b.top_logprobs]
    stats = smollm2.prefix_cache_stats()
    assert stats["hits"] >= 1 and 0 < stats["bytes"] <= stats["capacity_bytes"]


def test_a_conversation_reuses_its_earlier_turns(smollm2):
    smollm2.configure_prefix_cache(clear=True)
    messages = [{"role": "user", "content": "Tell me about cats."}]
    first = smollm2.chat(messages, temperature=0, max_tokens=20)
    messages += [
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And dogs?"},
    ]
    second = smollm2.chat(messages, temperature=0, max_tokens=20)
    assert second.usage.cached_tokens >= first.usage.prompt_tokens


def test_a_disabled_prefix_cache_keeps_nothing(smollm2_gguf):
    model = smolgen.load(smollm2_gguf, prefix_cache_bytes=0)
    model.generate("Hello there", max_tokens=2, temperature=0)
    again = model.generate("Hello there, friend", max_tokens=2, temperature=0)
    assert again.usage.cached_tokens == 0
    assert model.prefix_cache_stats()["entries"] == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "big", True])
def test_a_bad_prefix_cache_size_is_an_invalid_argument(smollm2, smollm2_gguf, bad):
    with pytest.raises(smolgen.InvalidArgumentError, match="prefix cache bytes"):
        smolgen.load(smollm2_gguf, prefix_cache_bytes=bad)
    with pytest.raises(smolgen.InvalidArgumentError, match="prefix cache bytes"):
        smollm2.configure_prefix_cache(bad)


def test_a_closed_stream_leaves_its_prompt_for_the_next_request(smollm2):
    smollm2.configure_prefix_cache(clear=True)
    prompt = "The history of the printing press " * 10
    stream = smollm2.generate(prompt, max_tokens=50, temperature=0, stream=True)
    next(stream)
    stream.close()
    assert next(stream, None) is None
    again = smollm2.generate(prompt + "began", max_tokens=1, temperature=0)
    assert again.usage.cached_tokens >= len(smollm2.tokenize(prompt)) - 1


def test_smolgen_chat_keeps_history_and_reports_the_context(smollm2_gguf):
    script = "My name is Ada.\nWhat is my name?\n/reset\nHello\n/exit\n"
    result = subprocess.run(
        [sys.executable, "-m", "smolgen", "chat", "-m", str(smollm2_gguf), "-n", "12", "-s", "1"],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    status = [line for line in result.stderr.splitlines() if line.startswith("[context")]
    assert len(status) == 3
    # The second turn carries the first: more context, most of it reused.
    used = [int(line.split()[1].split("/")[0]) for line in status]
    assert used[1] > used[0] and used[2] < used[1]
    assert "reused" in status[1] and "[conversation forgotten]" in result.stderr
    assert len(result.stdout.strip().splitlines()) >= 3


def test_smolgen_chat_survives_an_over_long_message_and_ctrl_c(smollm2_gguf):
    """A message too long for the window is refused and the chat goes on; Ctrl-C (SIGINT)
    during a reply stops that reply and the next message is answered."""
    # Python keeps SIGINT ignored when its parent ignored it (a background job, as a CI runner
    # may start the tests): give the chat Python's own handler, as a terminal would.
    start = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = ['smolgen', *sys.argv[1:]]; runpy.run_module('smolgen', run_name='__main__')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", start, "chat", "-m", str(smollm2_gguf), "-n", "4000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin and process.stdout
    process.stdin.write("word " * 9000 + "\n")
    process.stdin.write("Write a very long story about the sea.\n")
    process.stdin.flush()
    process.stdout.read(1)  # the reply has begun
    process.send_signal(signal.SIGINT)
    out, err = process.communicate("Say hello.\n/exit\n", timeout=300)
    assert process.returncode == 0, err
    assert "[not sent: " in err and "maximum context length" in err
    assert "[stopped]" in err
    assert err.count("[context") == 1  # the reply after the interrupted one finished
    assert out.count("\n") >= 2 and out.strip()  # the stopped reply's end, then the next one
