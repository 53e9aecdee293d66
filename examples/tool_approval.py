"""Human-in-the-loop: a tool that needs a person's approval, and a stop while the run waits.

Run it:  python examples/tool_approval.py

`transfer` is made with `@tool(requires_approval=True)`, so the agent pauses before calling it: the
run ends `interrupted`, with the pending call as its payload. A person then answers with
`Command(resume=...)`: here they first edit the amount, and on a second request they walk away,
so a stop cancels the waiting run and its pending call is answered `cancelled`. The thread goes on.
"""

from __future__ import annotations

import asyncio

from tether import Agent, Command, InMemoryCheckpointer, tool
from tether.testing import ScriptedModel, ToolCallStep

LEDGER: list[int] = []


@tool(requires_approval=True)
def transfer(amount: int, to: str) -> str:
    """Move money to someone.

    Args:
        amount: How much, in euros.
        to: Who gets it.
    """
    LEDGER.append(amount)
    return f"sent {amount} EUR to {to}"


def scripted() -> ScriptedModel:
    return ScriptedModel(
        [ToolCallStep("transfer", {"amount": 500, "to": "Ada"})],
        "Done: the money is on its way.",
        [ToolCallStep("transfer", {"amount": 90, "to": "Bob"})],
        default_reply="Fine, nothing was sent.",
    )


async def main() -> tuple[list[int], list[str]]:
    agent = Agent(scripted(), tools=[transfer], checkpointer=InMemoryCheckpointer())
    async for event in agent.arun("Send Ada 500 EUR", thread_id="bank"):
        if event.type == "run_finished":
            print(event.status, "->", event.interrupt["value"] if event.interrupt else None)
    # The person lowers the amount before approving.
    decision = {"action": "edit", "arguments": {"amount": 50, "to": "Ada"}}
    await agent.ainvoke(Command(resume=decision), thread_id="bank")

    await agent.ainvoke("Now send Bob 90 EUR", thread_id="bank")  # pauses for approval again
    print("stopped while waiting:", await agent.astop(thread_id="bank", reason="walked away"))
    await agent.ainvoke("Never mind.", thread_id="bank")
    statuses = [m.status for m in await agent.aget_messages("bank") if m.role == "tool"]
    print("ledger:", LEDGER, "tool results:", statuses)
    return LEDGER, statuses


if __name__ == "__main__":
    asyncio.run(main())
