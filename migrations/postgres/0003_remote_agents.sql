-- Agents that live elsewhere: `http` agents sign each turn request with a secret of their
-- own (Standard Webhooks), kept here because Skein must sign with it, and shown to the user
-- only in the response that created the agent. Other kinds leave it NULL. The kind-specific
-- settings of the new kinds (endpoint, card_url) live in the `spec` JSON like the others'.
ALTER TABLE agents ADD COLUMN secret text;
