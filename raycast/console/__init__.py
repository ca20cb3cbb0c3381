"""What an operator sees on the driver: live progress of the stages (:mod:`.progress`) and Ray's own output moved
to a log file (:mod:`.logs`)."""
