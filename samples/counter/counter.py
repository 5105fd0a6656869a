"""The seed example: a Server that counts and a Client that calls it twice.

Run the Server and the Client as two instances; kill either with SIGKILL at any moment and
restart it (on any port): the Client's output is always 1, then 2.
"""

from runtime import Immortal, rpc


class Server(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    def inc(self) -> int:
        self.count += 1
        return self.count


class Client(Immortal):
    async def main(self) -> None:  # runs once, at the instance's first start
        server = self.ref("server")  # a proxy to another instance, by name
        for _ in range(2):
            self.emit(await server.inc())  # an external output: logged, released once
