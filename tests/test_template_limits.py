"""A chat template is untrusted code: each render runs under a deadline and a size budget.

Every template of a hostile corpus (loops without end, strings and lists doubled, widths of a
billion, recursion, nesting) fails with a ChatTemplateError that names its cause, within the
deadline plus a margin, and without the process growing past a memory ceiling. Templates models
ship render exactly as before the limits: ``fixtures/chat_templates.json`` holds their output from
the sandbox that had none.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import smolgen
from smolgen import sandbox
from smolgen.chat import ChatTemplate

FIXTURES = Path(__file__).resolve().parent / "fixtures"

BIG = "{% set big = 'x' * 1000000 %}"
FOUR_MB = "{% set b = 'x' * 4000000 %}"
EMPTY_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

HOSTILE = {
    # Time: loops that print nothing, scans that build nothing.
    "nested_loops": EMPTY_LOOPS,
    "nested_loops_without_calls": "{% set r = range(100000) %}{% for i in r %}{% for j in r %}"
    "{% endfor %}{% endfor %}",
    "nested_loops_filtered": (
        "{% for i in range(100000) %}{% for j in range(100000) if false %}{% endfor %}{% endfor %}"
    ),
    "scan_in_a_loop": FOUR_MB + "{% for i in range(100000) %}{% if b.count('y') %}{% endif %}"
    "{% endfor %}",
    "lipsum": "{{ lipsum(n=10**7) }}",
    "lipsum_long_paragraphs": "{{ lipsum(n=1, max=10**9) }}",
    "wordwrap": "{{ ('a ' * 1000000)|wordwrap(1) }}",
    "urlize": "{{ ('http://x.y/ ' * 100000)|urlize }}",
    "pprint": "{{ range(100000)|list|pprint }}",
    "slice_into_a_billion": "{{ range(3)|slice(10**9)|list }}",
    # Growth in a loop.
    "list_doubling": "{% set ns = namespace(l=[1]) %}{% for i in range(100) %}"
    "{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "string_doubling_tilde": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "string_doubling_plus": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "string_doubling_autoescaped": "{% autoescape true %}{% set ns = namespace(s='ab') %}"
    "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{% endautoescape %}",
    "string_doubling_truncated": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
    "{% set ns.s = (ns.s ~ ns.s)|truncate(10**9) %}{% endfor %}",
    "list_string_growth": "{% set ns = namespace(s='') %}{% for i in range(10**5) %}"
    "{% set ns.s = ns.s ~ (range(10**5)|list|string) %}{% endfor %}",
    "integer_squaring": "{% set ns = namespace(x=3) %}{% for i in range(64) %}"
    "{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "slices_kept": FOUR_MB + "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}"
    "{% set ns.l = ns.l + [b[i:]] %}{% endfor %}",
    "nested_literals": "{% set ns = namespace(l=none) %}{% for i in range(100000) %}"
    "{% for j in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}{% endfor %}",
    "macro_literals": "{% macro m(ns) %}{% set ns.l = {'a': ns.l} %}{% endmacro %}"
    "{% set ns = namespace(l=none) %}{% for i in range(100000) %}{% for j in range(100000) %}"
    "{{ m(ns) }}{% endfor %}{% endfor %}",
    "sum_of_lists": "{{ range(60000)|map('string')|map('list')|sum(start=[]) }}",
    "sort_in_a_loop": "{% set l = range(100000)|list %}{% for i in range(100000) %}"
    "{{ (l|sort)[0] }}{% endfor %}",
    # One operation, a huge result.
    "ljust": "{{ 'a'.ljust(10**9) }}",
    "markup_ljust": "{{ ('a'|safe).ljust(10**9) }}",
    "markup_join": BIG + "{{ ('y'|safe).join([big] * 100) }}",
    "markup_replace": "{{ (('a' * 1000)|safe).replace('a', 'b' * 100000) }}",
    "center_method": "{{ 'a'.center(10**9) }}",
    "zfill": "{{ '1'.zfill(10**9) }}",
    "center_filter": "{{ 'x'|center(10**9) }}",
    "percent_width_filter": "{{ '%01000000000d'|format(1) }}",
    "percent_width": "{{ '%01000000000d' % 1 }}",
    "percent_star_width": "{{ '%*d' % (10**9, 1) }}",
    "percent_bytes": "{{ '%01000000000d'.encode() % 1 }}",
    "percent_mapping_repeated": FOUR_MB + "{{ ('%(a)s' * 1000) % {'a': b} }}",
    "format_width": "{{ '{:>1000000000}'.format(1) }}",
    "format_nested_width": "{{ '{:>{w}}'.format(1, w=10**9) }}",
    "format_precision": "{{ '{:.1000000000f}'.format(1.5) }}",
    "format_map_repeated": FOUR_MB + "{{ ('{a}' * 1000).format_map({'a': b}) }}",
    "indent": "{{ 'a'|indent(10**9) }}",
    "indent_by_a_string": BIG + "{{ ('a\n' * 1000)|indent(big) }}",
    "indent_many_lines": "{{ ('\n' * 7000000)|indent(0)|length }}",
    "string_times": "{{ 'a' * 10**9 }}",
    "list_times": "{{ [1] * 10**9 }}",
    "range_list": "{{ range(10**9)|list }}",
    "power": "{{ 7 ** 100000000 }}",
    "replace_empty": "{{ 'abcdefghijklmnop'|replace('', 'x' * 10**6) }}",
    "replace_method": "{{ ('a' * 1000).replace('a', 'b' * 100000) }}",
    "expandtabs": "{{ ('\t' * 100000).expandtabs(100000) }}",
    "translate": "{{ ('a' * 10000).translate({97: 'b' * 100000}) }}",
    "to_bytes": "{{ (1).to_bytes(1000000000, 'big') }}",
    "split": "{% set s = 'a ' * 4000000 %}{{ s.split()|length }}",
    "wordcount": "{{ ('a ' * 3000000)|wordcount }}",
    "title": "{{ ('a ' * 3000000)|title|length }}",
    "wordwrap_wrapstring": "{{ ('a ' * 50000)|wordwrap(1, wrapstring='x' * 100000) }}",
    "batch_filled": "{{ range(3)|batch(10**9, 'x')|list }}",
    "join_filter": BIG + "{{ ([big] * 100)|join(big) }}",
    "join_filter_generator": BIG + "{{ range(100000)|map('string')|join(big) }}",
    "join_method": BIG + "{{ big.join(range(100000)|map('string')) }}",
    "escape": "{{ ('<' * 7000000)|e|length }}",
    "tojson_escapes": "{{ ('\x00' * 7000000)|tojson|length }}",
    "chars_to_a_list": "{{ ('x' * 7000000)|map('upper')|list|length }}",
    "strftime_now": "{{ strftime_now('%c' * 1000000) }}",
    "tojson_indent": "{{ [[1, 2], [3]]|tojson(indent=10**9) }}",
    # Printing what is cheap to hold: many references to one big string.
    "print_references": FOUR_MB + "{{ [b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b] }}",
    "tojson_references": FOUR_MB + "{{ [b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b]|tojson }}",
    "print_dict_views": "{% set d = {'a': 'x' * 4000000} %}"
    "{{ [d.items(), d.items(), d.items(), d.items()] }}",
    "print_a_cycle": "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
    # Output kept in a list until it is joined: macros, blocks, {% set %}.
    "macro_output": BIG + "{% macro m() %}{% for i in range(100000) %}{{ big }}{% endfor %}"
    "{% endmacro %}{{ m()|length }}",
    "macro_many_outputs": "{% macro m() %}{% for i in range(100000) %}{% for j in range(100000) %}"
    + "{{ i }}" * 200
    + "{% endfor %}{% endfor %}{% endmacro %}{{ m() }}",
    "set_block": "{% set out %}{% for i in range(100000) %}{% for j in range(100000) %}"
    + "x" * 50
    + "{% endfor %}{% endfor %}{% endset %}{{ out|length }}",
    "block_reference": "{% block b %}{% for i in range(100000) %}"
    + "x" * 50
    + "{% endfor %}{% endblock %}{% for i in range(1000) %}{{ self.b()|length }}{% endfor %}",
    # Recursion.
    "recursive_macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "recursive_loop": "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "recursive_block": "{% block a %}{{ self.a() }}{% endblock %}",
    # The source itself.
    "nested_lists": "{{ " + "[" * 500 + "]" * 500 + " }}",
    "nested_parentheses": "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    "nested_ifs": "{% if true %}" * 300 + "x" + "{% endif %}" * 300,
    "nested_nots": "{{ " + "not " * 2000 + "true }}",
    "long_sum": "{{ " + " + ".join(["'a'"] * 3000) + " }}",
    "huge_source": "x" * 1_000_000,
}

# Every failure says which limit it met.
CAUSE = (
    r"exceeded its (deadline|size budget|time budget)|recursed too deeply|nests|nest too deeply"
    r"|characters long|Range too big"
)
MARGIN_S = 1.0  # past the deadline: the operation under way, and a slow, shared machine
CEILING_MB = 64  # growth of the process's peak resident memory, for any one template

# Runs the corpus in a fresh interpreter (its peak memory is its own) and reports, per template,
# the error, the seconds taken, the peak resident memory grown since the warm-up and whether that
# peak rose during the template (the first template past the ceiling is the one to blame). Should a
# limit
# stop biting, an alarm ends the template after ten seconds and the address space is capped two
# gigabytes above the start, so the test fails instead of taking the machine down.
RUNNER = """
import json, resource, signal, sys, time
from smolgen.chat import ChatTemplate

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def alarm(signum, frame):
    raise TimeoutError("still running after 10 s")

messages = [{"role": "user", "content": "x"}]
ChatTemplate("{% for m in messages %}{{ m.content ~ '!' }}{% endfor %}").render(messages)
base = peak_mb()
with open("/proc/self/statm") as f:
    mapped = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**31, resource.RLIM_INFINITY))
signal.signal(signal.SIGALRM, alarm)
results = {}
for name, source in json.load(sys.stdin).items():
    before = peak_mb()
    start = time.perf_counter()
    signal.alarm(10)
    try:
        ChatTemplate(source).render(messages)
        error, message = None, ""
    except BaseException as e:
        error, message = type(e).__name__, str(e)
    signal.alarm(0)
    seconds = time.perf_counter() - start
    results[name] = [error, message, seconds, peak_mb() - base, peak_mb() > before]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def hostile_runs() -> dict[str, list]:
    out = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(HOSTILE),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_template_fails_fast_small_and_says_why(hostile_runs, name):
    error, message, seconds, grown_mb, rose = hostile_runs[name]
    assert error == "ChatTemplateError", f"{name}: {error}: {message}"
    assert re.search(CAUSE, message), message
    assert seconds < sandbox.TIME_LIMIT + MARGIN_S, f"{name} took {seconds:.2f} s: {message}"
    assert grown_mb < CEILING_MB or not rose, f"{name} grew the process to {grown_mb:.0f} MB"


def test_the_corpus_is_not_small():
    assert len(HOSTILE) >= 20


CAUSES = {
    EMPTY_LOOPS: "exceeded its deadline: still running after",
    "{{ 'a' * 10**9 }}": "'*' would build about 1,000,000,000 bytes",
    "{{ 'a'.ljust(10**9) }}": "str.ljust would build",
    "{{ '{:>1000000000}'.format(1) }}": "str.format would build",
    "{{ 'a'|indent(10**9) }}": "the indent filter would build",
    HOSTILE["string_doubling_tilde"]: "'~' took it past the",
    HOSTILE["recursive_macro"]: "recursed too deeply",
    HOSTILE["nested_lists"]: "nests brackets more than 32 deep",
    HOSTILE["nested_ifs"]: "nests too deeply",
    HOSTILE["huge_source"]: "at most 262,144 are compiled",
}


@pytest.mark.parametrize(("source", "fragment"), CAUSES.items(), ids=range(len(CAUSES)))
def test_the_error_names_the_cause(source, fragment):
    # A short deadline for the empty loops: on a fast machine a second of them would reach the
    # size budget (one unit per step) first.
    limit = 0.05 if source == EMPTY_LOOPS else None
    with pytest.raises(smolgen.ChatTemplateError, match=fragment.replace("(", r"\(")):
        ChatTemplate(source, time_limit=limit).render([{"role": "user", "content": "x"}])


def test_the_deadline_is_a_setting():
    template = ChatTemplate(EMPTY_LOOPS, time_limit=0.2)
    start = time.perf_counter()
    with pytest.raises(smolgen.ChatTemplateError, match=r"limit 0.2 s"):
        template.render([{"role": "user", "content": "x"}])
    assert time.perf_counter() - start < 0.2 + MARGIN_S


def test_the_deadline_comes_from_the_environment(monkeypatch):
    assert ChatTemplate("x").time_limit == sandbox.TIME_LIMIT == 1.0
    monkeypatch.setenv("SMOLGEN_TEMPLATE_TIME_LIMIT", "0.25")
    assert ChatTemplate("x").time_limit == 0.25
    assert ChatTemplate("x", time_limit=3).time_limit == 3.0  # the keyword wins
    for bad in ("soon", "0", "-1", "inf"):
        monkeypatch.setenv("SMOLGEN_TEMPLATE_TIME_LIMIT", bad)
        with pytest.raises(smolgen.InvalidArgumentError, match="SMOLGEN_TEMPLATE_TIME_LIMIT"):
            ChatTemplate("x")
    for bad in (0, -1.0, float("nan"), "1", True):
        with pytest.raises(smolgen.InvalidArgumentError, match="time_limit"):
            ChatTemplate("x", time_limit=bad)


# --- templates models ship render as before ---------------------------------------------------

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Llama 3.1/3.2's without tools: trim, a slice, strftime_now when defined (its length, so the
# output does not change with the date).
LLAMA3 = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + (date_string|length|string) + " chars\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""  # noqa: E501

# Mistral's: namespace, loop.index0, raise_exception when the roles do not alternate.
MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set ns = namespace(index=0, last_user=-1) %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}
{%- endfor %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (ns.index % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- set ns.index = ns.index + 1 %}
    {%- if message['role'] == 'user' %}
        {%- if loop.index0 == ns.last_user and system_message is defined %}
            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content']|trim + eos_token }}
    {%- endif %}
{%- endfor %}
"""  # noqa: E501

# Qwen 2.5's: its default system line, loop.first, attribute access.
QWEN = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # noqa: E501

# Most of what the sandbox still allows, each used the way a template would.
KITCHEN_SINK = """{%- macro turn(m, n) -%}
{{ '{:>3}'.format(n) }}|{{ m.role|upper|center(11) }}|{{ m.content|replace('\\n', ' ')|truncate(40) }}
{%- endmacro -%}
{%- macro boxed() -%}[{{ caller() }}]{%- endmacro -%}
{%- set ns = namespace(chars=0, roles=[]) -%}
{%- for m in messages -%}
{%- set ns.chars = ns.chars + m.content|length -%}
{%- set ns.roles = ns.roles + [m.role] -%}
{{ turn(m, loop.index) }} {{ loop.cycle('odd', 'even') }} {{ loop.revindex }}/{{ loop.length }}{% if not loop.last %},{% endif %}
{% endfor -%}
chars={{ ns.chars }} roles={{ ns.roles|unique|sort|join(',') }} {{ ns.roles|tojson }}
users={{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|map('length')|list }}
{{ '%03d|%s'|format(messages|length, 'x' * 3) }} {{ '%-5s|' % 'ab' }} {{ 'ab'.ljust(4, '.') }}{{ '7'.zfill(3) }}
{{ ([1, 2] + [3])|sum }} {{ range(7)|batch(3, 0)|list }} {{ range(5)|slice(2)|list }} {{ [3, 1, 2]|sort(reverse=true) }}
{{ {'b': 1, 'a': [1, 'é', none, true]}|tojson }} {{ {'k': 'v'}|tojson(indent=2) }} {{ dict(z=1, y=2)|dictsort }}
{%- set captured %}{% for i in range(3) %}<{{ i }}>{% endfor %}{% endset %}
{{ captured }} {% filter upper %}shout {{ messages[0].role }}{% endfilter %} {% call boxed() %}in a box{% endcall %}
{{ messages[-1].content|wordwrap(20) }}
{{ 'a\\nb\\nc'|indent(2) }} {{ messages[0].content.split()|length }} {{ ' x '.strip() ~ 'y' ~ 3 }}
{%- for x in [[1, [2, 3]], [4]] recursive %}({{ loop.depth }}:{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}){% endfor %}
{%- autoescape true %} {{ '<b>' ~ messages[0].role }}{% endautoescape %}
{{ strftime_now('%Y')|length }} {{ (2 ** 10) * 3 // 7 }} {{ 10 / 4 }} {{ -3 }} {{ 'abc'[::-1] }}{{ messages[1:]|length }}
{%- if add_generation_prompt %}{{ '\\n<assistant>' }}{% endif %}"""  # noqa: E501

LEGIT = {
    "smollm2": SMOLLM2,
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "qwen": QWEN,
    "kitchen_sink": KITCHEN_SINK,
}


def conversation(turns: int, system: bool = True) -> list[dict[str, str]]:
    messages = (
        [{"role": "system", "content": 'You are terse. Ünïcödé ✓ "quoted"'}] if system else []
    )
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"Turn {i}: " + "some words here\nand a line " * (i % 4 + 1)
        messages.append({"role": role, "content": text})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "last?"})
    return messages


MESSAGE_SETS = {
    "one_user": [{"role": "user", "content": "Hi"}],
    "short": conversation(3),
    "no_system": conversation(5, system=False),
    "twenty": conversation(19),
    "not_alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
}

BEFORE = json.loads((FIXTURES / "chat_templates.json").read_text())


@pytest.mark.parametrize("key", sorted(BEFORE))
def test_the_templates_models_ship_render_as_before(key):
    name, messages, generation = key.split("/")
    template = ChatTemplate(LEGIT[name], bos_token="<s>", eos_token="</s>")
    try:
        out = template.render(MESSAGE_SETS[messages], add_generation_prompt=generation == "True")
    except smolgen.SmolgenError as e:
        out = f"!{type(e).__name__}: {e}"
    assert out == BEFORE[key]


def test_a_long_conversation_has_the_budget_it_needs():
    """The budget grows with the messages: a 12-million-character conversation renders (the
    ChatML template builds each turn twice over), while a template given the same messages
    still cannot build much more than they are."""
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "word " * 60_000}
        for i in range(41)
    ]
    expected = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
    expected += "Hugging Face<|im_end|>\n"
    expected += "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    expected += "<|im_start|>assistant\n"
    assert ChatTemplate(SMOLLM2).render(messages) == expected
    doubling = ChatTemplate(
        "{% set ns = namespace(s=messages[0].content) %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    )
    with pytest.raises(smolgen.ChatTemplateError, match="size budget"):
        doubling.render(messages)


def test_each_render_has_its_own_budget_and_deadline():
    """Renders in threads at once (as the server makes them) do not share a budget: a hostile
    one fails on its own while the others render."""
    legit = ChatTemplate(SMOLLM2)
    hostile = ChatTemplate(EMPTY_LOOPS, time_limit=0.5)
    messages = MESSAGE_SETS["twenty"]
    expected = legit.render(messages)
    outcomes: list[object] = []

    def render_legit() -> None:
        outcomes.extend(legit.render(messages) == expected for _ in range(200))

    def render_hostile() -> None:
        try:
            hostile.render(messages)
        except smolgen.ChatTemplateError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=render_hostile)]
    threads += [threading.Thread(target=render_legit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 600
    assert sum("deadline" in str(o) for o in outcomes) == 1
