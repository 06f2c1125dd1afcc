# twistd scans this file at every start: import nothing heavy here.  The checkers
# themselves (zmqwamp.users, zmqwamp.auth.jwtcheck) are imported only when selected.
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, ICheckerFactory)
class _LazyCheckerFactory:
    def __init__(self, authType, module, argStringFormat, credentialInterfaces):
        self.authType = authType
        self.module = module
        self.argStringFormat = argStringFormat
        self.credentialInterfaces = credentialInterfaces

    @property
    def authHelp(self):
        from twisted.python.reflect import namedModule

        return namedModule(self.module).AUTH_HELP

    def generateChecker(self, argstring=""):
        from twisted.python.reflect import namedModule

        return namedModule(self.module).checker_from_argstring(argstring)


zmqwampUsers = _LazyCheckerFactory(
    "zmqwamp-users",
    "zmqwamp.auth.users",
    "PATH of a users file (python -m zmqwamp.users add PATH AUTHID)",
    (IUsernamePassword, IUsernameHashedPassword),
)
jwt = _LazyCheckerFactory(
    "jwt",
    "zmqwamp.auth.jwtcheck",
    "secret_file=PATH|secret_env=VAR|public_key_file=PATH,audience=AUD[,issuer=ISS][,algorithm=ALG]...",
    (IUsernamePassword,),
)
