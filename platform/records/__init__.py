"""Records: the one door (RecordService) every read and write goes through."""
