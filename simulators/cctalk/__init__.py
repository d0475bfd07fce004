"""A ccTalk bus simulator: coin acceptor, hopper and bill validator behind one pty."""
