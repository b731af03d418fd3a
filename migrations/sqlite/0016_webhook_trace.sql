-- The trace context a webhook was written in (W3C traceparent), so that its delivery, made
-- later by another task or process, continues the collaboration's trace.
ALTER TABLE webhook_deliveries ADD COLUMN traceparent TEXT;
