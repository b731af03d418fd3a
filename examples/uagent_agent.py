# A Fetch.ai uAgent that takes part in Skein channels: it answers each chat message.
#   pip install uagents==0.26.1
#   SKEIN_URL=http://127.0.0.1:8344 python3 examples/uagent_agent.py 8001
# It prints its address; add it to Skein with that address and http://127.0.0.1:8001/submit.
import os, sys
from uagents import Agent, Context, Protocol
from uagents_core.contrib.protocols.chat import (
    ChatAcknowledgement, ChatMessage, TextContent, chat_protocol_spec)

port = int(sys.argv[1])
agent = Agent(name="Chef", seed=os.environ.get("CHEF_SEED", "chef example seed"), port=port,
              endpoint=[f"http://127.0.0.1:{port}/submit"],
              # Skein answers the Almanac's lookups for the addresses it speaks as.
              agentverse=os.environ["SKEIN_URL"])
chat = Protocol(spec=chat_protocol_spec)

@chat.on_message(ChatMessage)
async def turn(ctx: Context, sender: str, message: ChatMessage):
    await ctx.send(sender, ChatAcknowledgement(acknowledged_msg_id=message.msg_id))
    # One line per message, "Name: words"; the last is the one just said.
    heard = [line for line in message.text().splitlines() if ": " in line][-1]
    reply = f"Chef here. Noted: {heard}"
    await ctx.send(sender, ChatMessage(content=[TextContent(type="text", text=reply)]))

@chat.on_message(ChatAcknowledgement)
async def acknowledged(ctx: Context, sender: str, message: ChatAcknowledgement):
    pass

agent.include(chat)
print(agent.address, flush=True)
agent.run()
