"""The head process: the controller (sockets, engines, actors) and the scheduler it drives."""
