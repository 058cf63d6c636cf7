"""Chat `tools` and `tool_choice`: validation, the prompt that shows the tools, and the
grammar that forces a call.

A chat template with a tool section of its own (it reads `tools`) gets the tools as
Hugging Face passes them. A template without one (SmolLM2's) gets them the Hermes/Qwen2.5
way: described in the system message, past calls written as `<tool_call>` blocks and tool
results as `<tool_response>` blocks in a user turn; the output is parsed the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.fields import get_bool, json_type
from fastserve.runtime.frontend.guided import check_grammar
from fastserve.runtime.frontend.tokenizer import ModelTokenizer
from fastserve.runtime.frontend.tool_parsers import ToolFormat, tool_format_for

MAX_TOOLS = 128  # OpenAI's limit
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
HERMES_TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


@dataclass
class ToolSetup:
    """The tools of one chat request, when the model may call them."""

    tools: list[dict[str, Any]]  # validated, in OpenAI's shape
    format: ToolFormat  # how calls are written and parsed
    forced: str | None = None  # None: the model chooses; "required"; or the function's name


def parse_tools(body: dict[str, Any], tokenizer: ModelTokenizer) -> ToolSetup | None:
    """The request's tools; None when there are none or tool_choice is "none"."""
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise RequestError(
            "`functions` and `function_call` are deprecated: send `tools` and `tool_choice`",
            param="functions",
        )
    get_bool(body, "parallel_tool_calls")  # accepted; several calls are always parsed
    tools = _tools(body.get("tools"))
    choice = body.get("tool_choice")
    forced: str | None = None
    if choice is None or choice == "auto":
        pass
    elif choice == "none":
        return None
    elif choice == "required":
        forced = "required"
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        forced = choice["function"].get("name")
        if not isinstance(forced, str) or forced not in {t["function"]["name"] for t in tools}:
            raise RequestError(
                f"`tool_choice` names the function `{forced}`, which is not in `tools`",
                param="tool_choice",
            )
    else:
        raise RequestError(
            '`tool_choice` must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if not tools:
        if forced is not None:
            raise RequestError("`tool_choice` forces a call but `tools` is empty", param="tools")
        return None
    fmt = tool_format_for(tokenizer.chat_template_source, tokenizer.model_type)
    return ToolSetup(tools, fmt, forced)


def forced_grammar(setup: ToolSetup, tokenizer: ModelTokenizer) -> str | None:
    """The grammar of one call, for tool_choice "required" or a named function."""
    if setup.forced is None:
        return None
    tools = setup.tools
    if setup.forced != "required":
        tools = [t for t in tools if t["function"]["name"] == setup.forced]
    try:
        grammar = setup.format.forced_grammar(tools)
    except (ValueError, TypeError) as exc:
        raise RequestError(
            f"`tools` holds an invalid parameters schema: {exc}", param="tools"
        ) from exc
    check_grammar(grammar, tokenizer.guidance_tokenizer(), "tools")
    return grammar


def prompt_messages(
    messages: list[dict[str, Any]], setup: ToolSetup | None, tokenizer: ModelTokenizer
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) to render: as they are for a template that shows tools itself,
    in the Hermes layout for one that does not."""
    if tokenizer.template_shows_tools:
        return [_with_dict_arguments(m) for m in messages], setup.tools if setup else None
    if setup is None and not any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
        return messages, None
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "tool":
            block = f"<tool_response>\n{m['content']}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        elif m.get("tool_calls"):
            calls = [_call_text(c) for c in m["tool_calls"]]
            text = "\n".join(([m["content"]] if m["content"] else []) + calls)
            out.append({"role": m["role"], "content": text})
        else:
            out.append({k: v for k, v in m.items() if k != "tool_calls"})
    for m in out:
        m.pop("_tool_results", None)
    if setup is not None:
        lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in setup.tools)
        text = HERMES_TOOLS_PROMPT.format(tools=lines)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out, None


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(f"`tools` must be an array, got {json_type(value)}", param="tools")
    if len(value) > MAX_TOOLS:
        raise RequestError(
            f"`tools` holds {len(value)} tools, more than the {MAX_TOOLS} allowed", param="tools"
        )
    out = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise RequestError(f'`{where}` must be {{"type": "function", ...}}', param="tools")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise RequestError(f"`{where}.function` must be an object", param="tools")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RequestError(
                f"`{where}.function.name` must be 1-64 letters, digits, `_`, `.` or `-`",
                param="tools",
            )
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise RequestError(
                f"`{where}.function.parameters` must be a JSON schema object", param="tools"
            )
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise RequestError(f"`{where}.function.description` must be a string", param="tools")
        clean = {"name": name, **({"description": desc} if desc else {})}
        clean["parameters"] = params if params is not None else {"type": "object"}
        out.append({"type": "function", "function": clean})
    return out


def _arguments(call: Any) -> tuple[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RequestError(
            "an assistant message's `tool_calls` entry needs `function.name`", param="messages"
        )
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise RequestError(
                f"the arguments of a past call to `{fn['name']}` are not JSON: {exc}",
                param="messages",
            ) from exc
    return fn["name"], args


def _call_text(call: Any) -> str:
    name, args = _arguments(call)
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def _with_dict_arguments(message: dict[str, Any]) -> dict[str, Any]:
    # Templates write arguments with `| tojson`: they expect an object, not JSON text.
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        name, args = _arguments(call)
        calls.append({**call, "function": {"name": name, "arguments": args}})
    return {**message, "tool_calls": calls}
