"""A uAgent for Skein's tests, built on the reference SDK (uagents 0.26.1).

    python agent.py MODE PORT SEED (--skein URL | --agentverse URL)

MODE
  echo    acknowledges each chat message, then answers "<name> heard: <its last line>"
          (after --delay-ms, if given)
  silent  acknowledges each chat message and never answers
  error   answers each chat message with the protocol's ErrorMessage

--ask ADDRESS TEXT  once it is up, sends TEXT to ADDRESS as a chat message (a Skein team's
                    address: the team works on it and answers with its summary)

How it finds Skein, whose addresses it cannot know in advance (one per collaboration):
  --skein URL       its own resolver rule: every address is at URL (Skein's /submit)
  --agentverse URL  the SDK's own resolver, with Skein as its Almanac API

It listens on 127.0.0.1:PORT, prints its address as the first line of stdout
({"address": …}), then one JSON line per chat message it receives.
"""

import argparse
import asyncio
import json
import sys

from uagents import Agent, Context, Protocol
from uagents.registration import AgentRegistrationPolicy
from uagents.resolver import Resolver
from uagents_core.contrib.protocols.chat import (
    ChatAcknowledgement,
    ChatMessage,
    TextContent,
    chat_protocol_spec,
)
from uagents_core.models import ErrorMessage


class Everything(Resolver):
    """Resolves every address to one endpoint: Skein's."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    async def resolve(self, destination):
        return destination, [self.endpoint]


class Unregistered(AgentRegistrationPolicy):
    """Registers nowhere: there is no network to register on."""

    async def register(self, *args, **kwargs):
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["echo", "silent", "error"])
    parser.add_argument("port", type=int)
    parser.add_argument("seed")
    parser.add_argument("--name", default="Chef")
    parser.add_argument("--delay-ms", type=int, default=0, help="how long it thinks before answering")
    parser.add_argument("--ask", nargs=2, metavar=("ADDRESS", "TEXT"))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--skein")
    where.add_argument("--agentverse")
    args = parser.parse_args()

    options = dict(
        name=args.name,
        seed=args.seed,
        port=args.port,
        endpoint=[f"http://127.0.0.1:{args.port}/submit"],
        enable_agent_inspector=False,
        publish_agent_details=False,
        report_events=False,
    )
    if args.skein:
        options.update(resolve=Everything(args.skein), registration_policy=Unregistered())
    else:
        options.update(agentverse=args.agentverse)
    agent = Agent(**options)
    chat = Protocol(spec=chat_protocol_spec)

    @chat.on_message(ChatMessage)
    async def heard(ctx: Context, sender: str, message: ChatMessage):
        text = message.text()
        # Metadata items (Skein puts the trace context there), as the SDK parsed them.
        metadata = [dict(c.metadata) for c in message.content if getattr(c, "type", None) == "metadata"]
        print(json.dumps({"from": sender, "session": str(ctx.session), "text": text,
                          "metadata": metadata}), flush=True)
        await ctx.send(sender, ChatAcknowledgement(acknowledged_msg_id=message.msg_id))
        await asyncio.sleep(args.delay_ms / 1000)
        if args.mode == "echo":
            last = [line for line in text.splitlines() if line.strip()]
            said = last[-2] if len(last) > 1 else (last[-1] if last else "")
            reply = f"{args.name} heard: {said}"
            await ctx.send(sender, ChatMessage(content=[TextContent(type="text", text=reply)]))
        elif args.mode == "error":
            await ctx.send(sender, ErrorMessage(error="the kitchen is closed"))

    @chat.on_message(ChatAcknowledgement)
    async def acknowledged(ctx: Context, sender: str, message: ChatAcknowledgement):
        print(json.dumps({"from": sender, "acknowledged": str(message.acknowledged_msg_id)}), flush=True)

    @agent.on_message(ErrorMessage)
    async def refused(ctx: Context, sender: str, message: ErrorMessage):
        print(json.dumps({"from": sender, "error": message.error}), flush=True)

    asked = []

    # On a tick rather than at startup, so that its registration is in by then.
    @agent.on_interval(period=1.0)
    async def ask(ctx: Context):
        if args.ask and not asked:
            asked.append(True)
            address, text = args.ask
            message = ChatMessage(content=[TextContent(type="text", text=text)])
            await ctx.send(address, message)
            print(json.dumps({"asked": address, "msg_id": str(message.msg_id)}), flush=True)

    agent.include(chat)
    print(json.dumps({"address": agent.address}), flush=True)
    agent.run()


if __name__ == "__main__":
    sys.exit(main())
