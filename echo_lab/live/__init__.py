"""A live server seen from a client: the demo, live answer accuracy and paced clip tracks."""
