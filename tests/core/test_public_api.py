from __future__ import annotations

import tether


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(tether) if not name.startswith("_") and not _is_module(name)}
    public.discard("annotations")  # from `from __future__ import annotations`
    assert set(tether.__all__) - {"__version__"} == public


def test_the_agent_capabilities_names_are_exported() -> None:
    """Issue 13's public names (human in the loop, sub-agents, structured output, tools on the
    local model) are importable from `tether` itself, as the same objects as in their modules."""
    from tether.agent.output import OutputValidationError
    from tether.agent.subagent import AgentTool
    from tether.commands import Command, Resume
    from tether.interrupts import GraphInterrupt, Interrupt, interrupt

    expected = {
        "AgentTool": AgentTool,
        "Command": Command,
        "GraphInterrupt": GraphInterrupt,
        "Interrupt": Interrupt,
        "OutputValidationError": OutputValidationError,
        "Resume": Resume,
        "interrupt": interrupt,
    }
    for name, obj in expected.items():
        assert name in tether.__all__
        assert getattr(tether, name) is obj
    assert issubclass(tether.AgentTool, tether.Tool)


def _is_module(name: str) -> bool:
    return type(getattr(tether, name)).__name__ == "module"
