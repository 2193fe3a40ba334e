"""What happens to a finished span: sampling, scrubbing, bounded queues, and the sinks."""
