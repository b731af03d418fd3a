"""Skein benchmark peer: a two-agent AutoGen AgentChat conversation.

RoundRobinGroupChat of AssistantAgents `alice` and `bob`, backed by an
OpenAI-compatible server at --base-url, stopped by MaxMessageTermination(N)
(the task message counts, so N messages = N-1 model requests). Nothing is
streamed and nothing touches the internet. Prints ONE JSON line on stdout:
{"messages": <messages in the result>, "seconds": <wall seconds of team.run>}

    python run.py --base-url http://127.0.0.1:PORT/v1 --api-key KEY --model NAME --messages 20
"""
import argparse
import asyncio
import json
import logging
import sys
import time

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient

TASK = "Agree on a name for a bakery."


async def main(args: argparse.Namespace) -> None:
    client = OpenAIChatCompletionClient(
        model=args.model,
        base_url=args.base_url,
        api_key=args.api_key,
        # The model is unknown to AutoGen: describe it so no capability lookup happens.
        model_info={"vision": False, "function_calling": False, "json_output": False,
                    "family": "unknown", "structured_output": False},
    )
    alice = AssistantAgent("alice", client, system_message="You are Alice. Reply in one short sentence.")
    bob = AssistantAgent("bob", client, system_message="You are Bob. Reply in one short sentence.")
    team = RoundRobinGroupChat([alice, bob], termination_condition=MaxMessageTermination(args.messages))

    start = time.perf_counter()
    result = await team.run(task=TASK)
    seconds = time.perf_counter() - start

    await client.close()
    print(json.dumps({"messages": len(result.messages), "seconds": seconds}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--model", required=True)
    parser.add_argument("--messages", type=int, default=20)
    # AutoGen's own logging stays off stdout (only errors, and only on stderr).
    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)
    asyncio.run(main(parser.parse_args()))
