"""What users touch: sessions, turns, consensus rounds and votes, checks, handoffs, escalations."""
